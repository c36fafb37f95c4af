/* docroot.h: the files of static_dir, read once and served from memory.
 *
 * docroot_load() reads every servable file under a directory into
 * refcounted frames that hold the whole HTTP response: the head and the
 * body for GET, the head alone for HEAD. A request is answered by queueing
 * one of them by reference (conn_send), so serving a file costs no open(),
 * read() or copy, and nothing on the loop can block on a disk. The worker
 * loads the set at start and again on SIGHUP (static_dir is reloadable);
 * a frame still queued on a connection outlives the set it came from by
 * its own reference.
 *
 * Servable, the rules the per-request code had: regular files (symlinks
 * are followed) whose path below the directory is made of names of
 * [A-Za-z0-9._-] that do not start with '.', in subdirectories down to
 * DOCROOT_MAX_DEPTH levels; names starting with '.' are ignored. Bounds:
 * DOCROOT_FILE_MAX bytes per file, DOCROOT_TOTAL_MAX bytes and
 * DOCROOT_MAX_FILES files in all, paths of DOCROOT_PATH_MAX bytes. What is
 * not loaded for any other reason than a leading '.' is reported to the
 * caller's skip callback (the worker logs it, `broker -t` fails on it). */
#ifndef BROKER_DOCROOT_H
#define BROKER_DOCROOT_H

#include <stddef.h>

#include "frame.h"

#define DOCROOT_FILE_MAX (1024 * 1024)
#define DOCROOT_TOTAL_MAX (8 * 1024 * 1024)
#define DOCROOT_MAX_FILES 1024
#define DOCROOT_MAX_DEPTH 8
#define DOCROOT_PATH_MAX 255 /* "/sub/name.ext", as requested */

struct docroot;

/* A file or directory left out: path is its request path ("/a/b.js"), why
 * a short reason; both are borrowed for the call. */
typedef void (*docroot_skip_fn)(void *arg, const char *path, const char *why);

/* Reads dir and what is below it. skip (may be NULL) hears of every file
 * left out. Returns the set (empty when nothing is servable), or NULL with
 * err holding why when dir itself cannot be read or memory ran out. The
 * caller owns the set. */
struct docroot *docroot_load(const char *dir, docroot_skip_fn skip, void *arg, char *err,
                             size_t errlen);

/* Drops the set's references to its frames (frames still queued on
 * connections stay until written). Safe on NULL. */
void docroot_free(struct docroot *d);

/* Files in the set, and the bytes of their bodies. */
size_t docroot_count(const struct docroot *d);
size_t docroot_bytes(const struct docroot *d);

/* The response to a GET (head_only 0) or a HEAD (1) of path[0..n), as
 * requested ("/" is "/index.html"): a borrowed frame (conn_send takes a
 * reference of its own), or NULL when the set has no such file. d may be
 * NULL (no static_dir). */
struct frame *docroot_find(const struct docroot *d, const char *path, size_t n, int head_only);

#endif
