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

/*
 * The one rule for a secret file, for `check` and for the daemon alike: opened without
 * blocking (a FIFO would hang start-up) and following symlinks (Kubernetes and systemd mount
 * secrets as links), then judged by what the descriptor is: a regular file, owned by this
 * user or root, no group or other access, at most DW_SECRET_MAX_SIZE bytes. A bare name
 * (no '/') is a systemd credential and is never looked up in the working directory.
 * On success *fd is open (caller closes); on failure why says what and how to fix it.
 */
static dw_rc open_secret(const char *name, const char *path, int *fd, char *why, size_t why_size)
{
    dw_rc rc = DW_ERR_SECRET;
    int f = -1;
    struct stat st;
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    if (strchr(name, '/') == NULL && !(dir && *dir)) {
        snprintf(why, why_size,
                 "\"%s\" is a systemd credential name, but $CREDENTIALS_DIRECTORY is not set. "
                 "Give the file's path (e.g. ./%s) or start dwasync with LoadCredential=.",
                 name, name);
        rc = DW_ERR_NOT_FOUND;
        goto out;
    }
    f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (f < 0 || fstat(f, &st) != 0) {
        snprintf(why, why_size, "\"%s\" cannot be read: %s", path, strerror(errno));
        rc = errno == ENOENT ? DW_ERR_NOT_FOUND : DW_ERR_IO;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, why_size, "\"%s\" is not a regular file", path);
        rc = DW_ERR_INVALID;
        goto out;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(why, why_size,
                 "\"%s\" has mode %04o: group or others can access it. Run chmod 600 \"%s\" so "
                 "that only its owner can read it.",
                 path, (unsigned)(st.st_mode & 07777), path);
        goto out;
    }
    if (st.st_uid != geteuid() && st.st_uid != 0) {
        snprintf(why, why_size,
                 "\"%s\" is owned by uid %u, not by the user dwasync runs as (uid %u) or root. "
                 "Run chown on the file (a symlink's target counts).",
                 path, (unsigned)st.st_uid, (unsigned)geteuid());
        goto out;
    }
    if (st.st_size > DW_SECRET_MAX_SIZE) {
        snprintf(why, why_size, "\"%s\" is larger than %d bytes", path, DW_SECRET_MAX_SIZE);
        goto out;
    }
    *fd = f;
    f = -1;
    rc = DW_OK;
out:
    if (f >= 0)
        close(f);
    return rc;
}

dw_rc dw_secret_check(const char *name, char *why, size_t why_size)
{
    char *path = dw_secret_resolve(name);
    int fd = -1;
    dw_rc rc = open_secret(name, path, &fd, why, why_size);
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

dw_rc dw_secret_read(const char *name, int keep_newlines, char **out, size_t *out_len)
{
    char why[512];
    char *path = dw_secret_resolve(name);
    char *data = NULL;
    size_t len = 0;
    int fd = -1;
    dw_rc rc = open_secret(name, path, &fd, why, sizeof why);
    if (rc != DW_OK) {
        DW_ERROR("secret file %s", why);
        rc = DW_ERR_SECRET;
        goto out;
    }
    /* open_secret checked the descriptor we read from, so a swap of the path cannot win. */
    data = dw_malloc(DW_SECRET_MAX_SIZE + 1);
    for (;;) {
        ssize_t n = read(fd, data + len, (size_t)DW_SECRET_MAX_SIZE + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            DW_ERROR("secret file \"%s\" could not be read: %s", path, strerror(errno));
            rc = DW_ERR_SECRET;
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > DW_SECRET_MAX_SIZE) {
            DW_ERROR("secret file \"%s\" is larger than %d bytes", path, DW_SECRET_MAX_SIZE);
            rc = DW_ERR_SECRET;
            goto out;
        }
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
    dw_secret_free(data, data ? DW_SECRET_MAX_SIZE + 1 : 0);
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
