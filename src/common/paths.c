/*
 * Finding the SQL migrations (see paths.h): $DWASYNC_SHAREDIR/sql, then
 * ../share/dwasync/sql next to the executable, then the source tree's sql/ (build trees).
 * The first directory that exists is kept for the life of the process; the list of the ones
 * tried is kept for the error message when none does.
 */
#include "dwasync/paths.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dwasync/alloc.h"

static char *sqldir;
static char candidates[3 * PATH_MAX + 16];

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Directory of the running executable, or "" if unknown. */
static void exe_dir(char *out, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", out, size - 1);
    if (n <= 0) {
        out[0] = '\0';
        return;
    }
    out[n] = '\0';
    char *slash = strrchr(out, '/');
    if (slash)
        *slash = '\0';
}

const char *dw_paths_sqldir(void)
{
    if (sqldir)
        return sqldir;
    char exe[PATH_MAX];
    exe_dir(exe, sizeof exe);
    const char *env = getenv("DWASYNC_SHAREDIR");
    char installed[PATH_MAX + 32];
    snprintf(installed, sizeof installed, "%s/../share/dwasync/sql", exe);
    const char *tries[] = {env && *env ? env : NULL, installed, DW_SOURCE_SQLDIR};
    candidates[0] = '\0';
    for (size_t i = 0; i < sizeof tries / sizeof *tries; i++) {
        if (tries[i] == NULL)
            continue;
        char path[PATH_MAX + 8];
        /* $DWASYNC_SHAREDIR names the share dir; the others name sql dirs directly. */
        snprintf(path, sizeof path, "%s%s", tries[i], i == 0 ? "/sql" : "");
        size_t used = strlen(candidates);
        snprintf(candidates + used, sizeof candidates - used, "%s%s", used ? ", " : "", path);
        if (is_dir(path)) {
            char resolved[PATH_MAX];
            sqldir = dw_strdup(realpath(path, resolved) ? resolved : path);
            return sqldir;
        }
    }
    return NULL;
}

const char *dw_paths_sqldir_candidates(void)
{
    return candidates;
}
