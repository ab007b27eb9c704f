/*
 * Reading secret files (see secret.h). The type, mode and size are checked on the open
 * descriptor (opened with O_NOFOLLOW), not on the path, so a file swapped in between cannot
 * win. What is read is registered with the redactor; dw_secret_free() wipes it before freeing.
 */
#include "dwasync/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dwasync/alloc.h"
#include "dwasync/log.h"
#include "dwasync/redact.h"

char *dw_secret_resolve(const char *name)
{
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    if (strchr(name, '/') == NULL && dir && *dir)
        return dw_asprintf("%s/%s", dir, name);
    return dw_strdup(name);
}

/* Checks an open file's mode; fills why with the problem and its fix. */
static dw_rc check_mode(const struct stat *st, const char *path, char *why, size_t why_size)
{
    if (!S_ISREG(st->st_mode)) {
        snprintf(why, why_size, "secret file \"%s\" is not a regular file", path);
        return DW_ERR_SECRET;
    }
    if (st->st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(why, why_size,
                 "secret file \"%s\" is accessible by group or others (mode %04o). "
                 "Run chmod 600 \"%s\" so that only its owner can read it.",
                 path, (unsigned)(st->st_mode & 07777), path);
        return DW_ERR_SECRET;
    }
    if (st->st_size > DW_SECRET_MAX_SIZE) {
        snprintf(why, why_size, "secret file \"%s\" is larger than %d bytes", path,
                 DW_SECRET_MAX_SIZE);
        return DW_ERR_SECRET;
    }
    return DW_OK;
}

dw_rc dw_secret_check(const char *name, char *why, size_t why_size)
{
    char *path = dw_secret_resolve(name);
    struct stat st;
    dw_rc rc = DW_OK;
    if (stat(path, &st) != 0) {
        snprintf(why, why_size, "secret file \"%s\" cannot be read: %s", path, strerror(errno));
        rc = DW_ERR_SECRET;
        goto out;
    }
    rc = check_mode(&st, path, why, why_size);
out:
    free(path);
    return rc;
}

dw_rc dw_secret_read(const char *name, int keep_newlines, char **out, size_t *out_len)
{
    char why[512];
    char *path = dw_secret_resolve(name);
    char *data = NULL;
    size_t len = 0;
    dw_rc rc = DW_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        DW_ERROR("secret file \"%s\" cannot be opened: %s", path, strerror(errno));
        rc = DW_ERR_SECRET;
        goto out;
    }
    /* Check the descriptor we read from, not the path, so a swap in between cannot win. */
    struct stat st;
    if (fstat(fd, &st) != 0 || (rc = check_mode(&st, path, why, sizeof why)) != DW_OK) {
        if (rc == DW_OK) {
            snprintf(why, sizeof why, "secret file \"%s\": %s", path, strerror(errno));
            rc = DW_ERR_SECRET;
        }
        DW_ERROR("%s", why);
        goto out;
    }
    data = dw_malloc((size_t)st.st_size + 1);
    while (len < (size_t)st.st_size) {
        ssize_t n = read(fd, data + len, (size_t)st.st_size - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            DW_ERROR("secret file \"%s\" could not be read: %s", path,
                     n < 0 ? strerror(errno) : "unexpected end of file");
            rc = DW_ERR_SECRET;
            goto out;
        }
        len += (size_t)n;
    }
    data[len] = '\0';
    if (!keep_newlines)
        while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
            data[--len] = '\0';
    if (len == 0) {
        DW_ERROR("secret file \"%s\" is empty", path);
        rc = DW_ERR_SECRET;
        goto out;
    }
    dw_redact_register(data);
    *out = data;
    *out_len = len;
    data = NULL;
out:
    if (fd >= 0)
        close(fd);
    dw_secret_free(data, len);
    free(path);
    return rc;
}

void dw_secret_free(char *secret, size_t len)
{
    if (secret == NULL)
        return;
    explicit_bzero(secret, len);
    free(secret);
}
