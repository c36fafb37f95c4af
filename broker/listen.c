/* listen.c: binding the listeners (see listen.h). */
#include "listen.h"

#include <errno.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

#define BACKLOG 4096

/* A socket file this process created, to be removed at exit. */
struct made {
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    dev_t dev;
    ino_t ino;
};

struct lsn_set {
    int nworkers, nlisten;
    pid_t owner;        /* the process that bound them: only it unlinks */
    struct lsn_sock *socks; /* nworkers x nlisten */
    struct made *made;  /* nworkers x nlisten, path[0] == 0 when none */
};

/* SO_REUSEPORT would let a second broker (an old one still running) join
 * the port silently and take half the connections: a plain bind first
 * fails with EADDRINUSE when anything holds the port. */
static int port_is_free(const struct cfg_listen *l, const struct addrinfo *ai)
{
    int fd, one = 1, ok = 0;

    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
        bind(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        ok = 1;
    else
        log_error("listen %s:%d: %s (is another broker running?)", l->host, l->port,
                  strerror(errno));
    if (fd >= 0)
        close(fd);
    return ok;
}

static int tcp_socket(const struct cfg_listen *l, const struct addrinfo *ai)
{
    int fd, one = 1;
    /* TCP_DEFER_ACCEPT: a connection reaches accept() once its first bytes
     * (the request) are in, so a worker accepts, reads and answers in one
     * pass instead of a read that finds nothing and a loop turn more; a
     * peer that connects and stays silent costs no descriptor until the
     * kernel gives up deferring (about a second), then meets the handshake
     * timeout. TCP_NODELAY is inherited by every accepted socket (Linux):
     * frames leave whole, once per tick, and Nagle would only delay them. */
    int defer_s = 1;

    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, BACKLOG) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_s, sizeof(defer_s)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
        log_error("listen %s:%d: %s", l->host, l->port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int open_tcp(struct lsn_set *s, int li, const struct cfg_listen *l)
{
    struct addrinfo hints, *ai = NULL;
    char port[8];
    int err, i, rc = -1;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%d", l->port);
    if ((err = getaddrinfo(l->host, port, &hints, &ai)) != 0) {
        log_error("listen %s:%d: %s", l->host, l->port, gai_strerror(err));
        return -1;
    }
    if (!port_is_free(l, ai))
        goto done;
    for (i = 0; i < s->nworkers; i++) {
        struct lsn_sock *k = &s->socks[i * s->nlisten + li];
        if ((k->fd = tcp_socket(l, ai)) < 0)
            goto done;
    }
    rc = 0;
done:
    freeaddrinfo(ai);
    return rc;
}

/* What is at path: 0 nothing (or a stale socket, now removed), -1 something
 * that must stay (logged). */
static int clear_stale(const char *path)
{
    struct sockaddr_un sa;
    struct stat st;
    int fd, r;

    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        log_error("listen unix:%s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        log_error("listen unix:%s: exists and is not a socket; not replacing it", path);
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
        log_error("listen unix:%s: socket: %s", path, strerror(errno));
        return -1;
    }
    r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    close(fd);
    if (r == 0) {
        log_error("listen unix:%s: a process accepts on it (is another broker running?)", path);
        return -1;
    }
    if (errno != ECONNREFUSED) {
        log_error("listen unix:%s: %s", path, strerror(errno));
        return -1;
    }
    /* Nobody accepts: left by a broker that died. */
    if (unlink(path) != 0 && errno != ENOENT) {
        log_error("listen unix:%s: removing the stale socket: %s", path, strerror(errno));
        return -1;
    }
    log_info("listen unix:%s: replaced a stale socket", path);
    return 0;
}

static int unix_socket(const char *path, const struct cfg *cfg, gid_t gid, struct made *m)
{
    struct sockaddr_un sa;
    struct stat st;
    int fd;

    if (clear_stale(path) != 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        log_error("listen unix:%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    /* Created: ours to remove, whatever happens next. */
    snprintf(m->path, sizeof(m->path), "%s", path);
    if (stat(path, &st) == 0) {
        m->dev = st.st_dev;
        m->ino = st.st_ino;
    }
    if (chmod(path, (mode_t)cfg->listen_socket_mode) != 0 ||
        (gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) != 0) || listen(fd, BACKLOG) != 0) {
        log_error("listen unix:%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int open_unix(struct lsn_set *s, int li, const struct cfg_listen *l,
                     const struct cfg *cfg)
{
    gid_t gid = (gid_t)-1;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int i;

    if (cfg->listen_socket_group && *cfg->listen_socket_group) {
        struct group *g = getgrnam(cfg->listen_socket_group);
        if (g == NULL) {
            log_error("listen_socket_group %s: no such group", cfg->listen_socket_group);
            return -1;
        }
        gid = g->gr_gid;
    }
    for (i = 0; i < s->nworkers; i++) {
        struct lsn_sock *k = &s->socks[i * s->nlisten + li];
        if ((size_t)snprintf(path, sizeof(path), "%s.%d", l->path, i + 1) >= sizeof(path)) {
            log_error("listen unix:%s: path too long", l->path);
            return -1;
        }
        if ((k->fd = unix_socket(path, cfg, gid, &s->made[i * s->nlisten + li])) < 0)
            return -1;
    }
    return 0;
}

struct lsn_set *lsn_open(const struct cfg *cfg, int nworkers)
{
    struct lsn_set *s = calloc(1, sizeof(*s));
    int li, i, n = nworkers * cfg->nlisten;

    if (s == NULL)
        return NULL;
    s->nworkers = nworkers;
    s->nlisten = cfg->nlisten;
    s->owner = getpid();
    s->socks = calloc((size_t)n, sizeof(*s->socks));
    s->made = calloc((size_t)n, sizeof(*s->made));
    if (s->socks == NULL || s->made == NULL) {
        log_error("listen: out of memory");
        lsn_free(s);
        return NULL;
    }
    for (i = 0; i < n; i++) {
        s->socks[i].fd = -1;
        s->socks[i].l = &cfg->listen[i % cfg->nlisten];
        s->socks[i].is_unix = cfg->listen[i % cfg->nlisten].path != NULL;
    }
    for (li = 0; li < cfg->nlisten; li++) {
        const struct cfg_listen *l = &cfg->listen[li];
        if ((l->path ? open_unix(s, li, l, cfg) : open_tcp(s, li, l)) != 0) {
            lsn_free(s);
            return NULL;
        }
    }
    return s;
}

int lsn_take(struct lsn_set *s, int w, struct lsn_sock *out)
{
    int i, n = 0, total = s->nworkers * s->nlisten;

    for (i = 0; i < total; i++) {
        if (i / s->nlisten == w) {
            out[n++] = s->socks[i];
        } else if (s->socks[i].fd >= 0) {
            close(s->socks[i].fd);
        }
        s->socks[i].fd = -1;
    }
    return n;
}

void lsn_close(struct lsn_set *s)
{
    int i, total = s->nworkers * s->nlisten;

    for (i = 0; i < total; i++) {
        if (s->socks[i].fd >= 0)
            close(s->socks[i].fd);
        s->socks[i].fd = -1;
    }
}

void lsn_free(struct lsn_set *s)
{
    struct stat st;
    int i, total;

    if (s == NULL)
        return;
    total = s->nworkers * s->nlisten;
    if (s->socks != NULL)
        lsn_close(s);
    for (i = 0; s->made != NULL && i < total && getpid() == s->owner; i++) {
        const struct made *m = &s->made[i];
        /* Only the file we bound: a second broker may have replaced it. */
        if (m->path[0] && stat(m->path, &st) == 0 && st.st_dev == m->dev &&
            st.st_ino == m->ino && unlink(m->path) != 0)
            log_warn("removing %s: %s", m->path, strerror(errno));
    }
    free(s->socks);
    free(s->made);
    free(s);
}

void lsn_describe(const struct cfg *cfg, char *buf, size_t len)
{
    size_t used = 0;
    int i, r;

    if (len)
        buf[0] = '\0';
    for (i = 0; i < cfg->nlisten && used < len; i++) {
        const struct cfg_listen *l = &cfg->listen[i];
        r = l->path ? snprintf(buf + used, len - used, "%sunix:%s.N", i ? ", " : "", l->path)
                    : snprintf(buf + used, len - used, "%s%s:%d", i ? ", " : "", l->host, l->port);
        if (r > 0)
            used += (size_t)r;
    }
}
