/*
 * paths.h - where dwasync finds the files it ships (SQL migrations, sample data).
 *
 * Installed, they live under <prefix>/share/dwasync next to <prefix>/bin. In a build tree
 * the binaries find the source tree's files instead, so tests run without installing.
 * $DWASYNC_SHAREDIR overrides both.
 */
#ifndef DWASYNC_PATHS_H
#define DWASYNC_PATHS_H

/*
 * Directory holding the SQL migrations. Borrowed; valid for the life of the process.
 * NULL if none of the candidates exists (the caller says which were tried via
 * dw_paths_sqldir_candidates()).
 */
const char *dw_paths_sqldir(void);

/* Human-readable list of the directories dw_paths_sqldir() tried, for error messages. */
const char *dw_paths_sqldir_candidates(void);

#endif
