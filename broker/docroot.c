/* docroot.c: static_dir's files in memory (see docroot.h). */
#include "docroot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "protocol/buf.h"

struct docroot_file {
    char *path; /* the request path, "/a/b.js" */
    size_t plen;
    struct frame *get;  /* head and body; one reference, ours */
    struct frame *head; /* the head alone */
};

struct docroot {
    struct docroot_file *files; /* sorted by path (memcmp, then length) */
    size_t n, cap;
    size_t bytes; /* bodies */
};

/* The state of one load. */
struct loader {
    struct docroot *d;
    docroot_skip_fn skip;
    void *arg;
    const char *dir;
    char *err;
    size_t errlen;
};

static void skipped(struct loader *l, const char *rel, const char *why)
{
    if (l->skip != NULL)
        l->skip(l->arg, rel, why);
}

static int out_of_memory(struct loader *l)
{
    snprintf(l->err, l->errlen, "out of memory");
    return -1;
}

static const char *content_type(const char *path)
{
    static const char *const types[][2] = {
        {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},   {".json", "application/json"},
        {".svg", "image/svg+xml"},             {".png", "image/png"},
        {".ico", "image/x-icon"},              {".txt", "text/plain; charset=utf-8"}};
    const char *slash = strrchr(path, '/'), *dot = strrchr(slash ? slash : path, '.');
    size_t i;

    for (i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(dot, types[i][0]) == 0)
            return types[i][1];
    return "application/octet-stream";
}

/* 1 when a directory entry's name may be part of a request path (its
 * leading '.' has been looked at already). */
static int name_ok(const char *name)
{
    const char *p;

    for (p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-' || *p == '_'))
            return 0;
    return 1;
}

/* Reads exactly n bytes of fd into p, and then the end of the file.
 * Returns 0, or -1 (errno set; EIO when the file is not n bytes long any
 * more: it is being written, and a half-written file is not served). */
static int read_all(int fd, char *p, size_t n)
{
    char extra;
    ssize_t r;

    while (n > 0) {
        r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0) {
            errno = EIO;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    while ((r = read(fd, &extra, 1)) < 0 && errno == EINTR)
        ;
    if (r != 0) {
        if (r > 0)
            errno = EIO;
        return -1;
    }
    return 0;
}

static int file_add(struct loader *l, const char *rel, struct frame *get, struct frame *head)
{
    struct docroot *d = l->d;
    struct docroot_file *f;

    if (d->n == d->cap) {
        size_t ncap = d->cap ? d->cap * 2 : 16;
        struct docroot_file *nf = realloc(d->files, ncap * sizeof(*nf));
        if (nf == NULL)
            return -1;
        d->files = nf;
        d->cap = ncap;
    }
    f = &d->files[d->n];
    f->plen = strlen(rel);
    if ((f->path = malloc(f->plen + 1)) == NULL)
        return -1;
    memcpy(f->path, rel, f->plen + 1);
    f->get = get;
    f->head = head;
    d->n++;
    return 0;
}

/* Loads one regular file (full is its path on disk, rel its request path).
 * Returns 0 when it was loaded or skipped, -1 on ENOMEM. */
static int file_load(struct loader *l, const char *full, const char *rel)
{
    struct proto_buf b = {0};
    struct frame *get = NULL, *head = NULL;
    struct stat st;
    char why[96];
    size_t size, head_len;
    int fd = -1, rc = 0;

    /* O_NONBLOCK: a FIFO that replaced the file since it was listed must
     * not hang the loop. */
    if ((fd = open(full, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0 || fstat(fd, &st) != 0) {
        skipped(l, rel, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        skipped(l, rel, "not a regular file");
        goto done;
    }
    size = (size_t)st.st_size;
    if (st.st_size > DOCROOT_FILE_MAX) {
        snprintf(why, sizeof(why), "%lld bytes, over the %d a file may have",
                 (long long)st.st_size, DOCROOT_FILE_MAX);
        skipped(l, rel, why);
        goto done;
    }
    if (l->d->n >= DOCROOT_MAX_FILES) {
        snprintf(why, sizeof(why), "over %d files", DOCROOT_MAX_FILES);
        skipped(l, rel, why);
        goto done;
    }
    if (l->d->bytes + size > DOCROOT_TOTAL_MAX) {
        snprintf(why, sizeof(why), "%zu bytes more would put the files over %d bytes in all",
                 size, DOCROOT_TOTAL_MAX);
        skipped(l, rel, why);
        goto done;
    }
    if (proto_buf_printf(&b,
                         "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                         "Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
                         content_type(rel), size) != 0 ||
        proto_buf_reserve(&b, size) != 0) {
        rc = out_of_memory(l);
        goto done;
    }
    head_len = b.len;
    if (read_all(fd, b.data + b.len, size) != 0) {
        skipped(l, rel, errno == EIO ? "changed while it was read" : strerror(errno));
        goto done;
    }
    b.len += size;
    get = frame_copy(b.data, b.len);
    head = frame_copy(b.data, head_len);
    if (get == NULL || head == NULL || file_add(l, rel, get, head) != 0) {
        frame_unref(get);
        frame_unref(head);
        rc = out_of_memory(l);
        goto done;
    }
    l->d->bytes += size;
done:
    if (fd >= 0)
        close(fd);
    proto_buf_free(&b);
    return rc;
}

/* Loads the directory at request path rel ("" for the top), depth levels
 * down. Returns 0, or -1 with l->err set (the top cannot be read, ENOMEM). */
static int dir_load(struct loader *l, const char *rel, int depth)
{
    struct dirent **names = NULL;
    char full[4096], child[DOCROOT_PATH_MAX + 1], why[64];
    struct stat st;
    int i, n, rc = 0;

    if ((size_t)snprintf(full, sizeof(full), "%s%s", l->dir, rel) >= sizeof(full)) {
        if (depth == 0) {
            snprintf(l->err, l->errlen, "path too long");
            return -1;
        }
        skipped(l, rel, "path too long");
        return 0;
    }
    /* Sorted, so that which files the total bound leaves out does not
     * depend on the order the file system lists them in. */
    if ((n = scandir(full, &names, NULL, alphasort)) < 0) {
        if (depth == 0) {
            snprintf(l->err, l->errlen, "cannot read the directory: %s", strerror(errno));
            return -1;
        }
        skipped(l, rel, strerror(errno));
        return 0;
    }
    for (i = 0; i < n; i++) {
        const char *name = names[i]->d_name;

        if (rc != 0 || name[0] == '.') /* also "." and "..": never served */
            continue;
        if ((size_t)snprintf(child, sizeof(child), "%s/%s", rel, name) >= sizeof(child) ||
            (size_t)snprintf(full, sizeof(full), "%s%s", l->dir, child) >= sizeof(full)) {
            skipped(l, *rel ? rel : "/", "a name in it makes a path over 255 bytes");
            continue;
        }
        if (!name_ok(name)) {
            skipped(l, child, "its name has characters other than A-Z a-z 0-9 . - _");
            continue;
        }
        if (stat(full, &st) != 0) {
            skipped(l, child, strerror(errno));
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            if (depth + 1 > DOCROOT_MAX_DEPTH) {
                snprintf(why, sizeof(why), "more than %d directories deep", DOCROOT_MAX_DEPTH);
                skipped(l, child, why);
                continue;
            }
            rc = dir_load(l, child, depth + 1);
        } else if (!S_ISREG(st.st_mode)) {
            skipped(l, child, "not a regular file");
        } else {
            rc = file_load(l, full, child);
        }
    }
    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

static int path_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);

    return c != 0 ? c : an < bn ? -1 : an > bn;
}

static int file_cmp(const void *a, const void *b)
{
    const struct docroot_file *x = a, *y = b;

    return path_cmp(x->path, x->plen, y->path, y->plen);
}

struct docroot *docroot_load(const char *dir, docroot_skip_fn skip, void *arg, char *err,
                             size_t errlen)
{
    struct loader l;

    memset(&l, 0, sizeof(l));
    l.skip = skip;
    l.arg = arg;
    l.dir = dir;
    l.err = err;
    l.errlen = errlen;
    if ((l.d = calloc(1, sizeof(*l.d))) == NULL) {
        out_of_memory(&l);
        return NULL;
    }
    if (dir_load(&l, "", 0) != 0) {
        docroot_free(l.d);
        return NULL;
    }
    if (l.d->n > 1)
        qsort(l.d->files, l.d->n, sizeof(l.d->files[0]), file_cmp);
    return l.d;
}

void docroot_free(struct docroot *d)
{
    size_t i;

    if (d == NULL)
        return;
    for (i = 0; i < d->n; i++) {
        frame_unref(d->files[i].get);
        frame_unref(d->files[i].head);
        free(d->files[i].path);
    }
    free(d->files);
    free(d);
}

size_t docroot_count(const struct docroot *d)
{
    return d ? d->n : 0;
}

size_t docroot_bytes(const struct docroot *d)
{
    return d ? d->bytes : 0;
}

struct frame *docroot_find(const struct docroot *d, const char *path, size_t n, int head_only)
{
    static const char index[] = "/index.html";
    size_t lo = 0, hi;

    if (d == NULL)
        return NULL;
    if (n == 1 && path[0] == '/') {
        path = index;
        n = sizeof(index) - 1;
    }
    hi = d->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct docroot_file *f = &d->files[mid];
        int c = path_cmp(path, n, f->path, f->plen);
        if (c == 0)
            return head_only ? f->head : f->get;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}
