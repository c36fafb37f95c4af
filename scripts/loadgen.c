/* loadgen.c: a WebSocket load generator for the broker (the successor of Thor).
 *
 * One process, one epoll loop, N client connections. Each connection does
 * the RFC 6455 client handshake (random key, accept checked), subscribes to
 * one channel (by a frame, waiting for the ack, or in the URL), and then
 * counts what arrives: batch frames, the messages in them and bytes.
 *
 * Cheapness is the point, so that one process can stand in for thousands of
 * browsers:
 *   - a connection is a ~100-byte struct; buffers exist only while a frame
 *     that must be seen whole (HTTP answer, ack, control frame, sampled
 *     batch) is split across reads;
 *   - messages are counted by a streaming scan that only tracks JSON nesting
 *     and lets memchr() skip string bytes: no parse, no allocation, and
 *     frames split across reads need no buffer;
 *   - only every --sample'th batch frame of a connection is parsed (validated
 *     with protocol/json.h), and each message's "ts" (publish time in
 *     microseconds since the epoch, CLOCK_REALTIME, as scripts/publish.c
 *     writes it) gives a latency sample for a log-bucketed histogram.
 *
 * Latency ends at the kernel's receive time of the bytes (SO_TIMESTAMP), not
 * at our parse: one process draining thousands of sockets after each flush
 * would otherwise add its own queueing (tens of ms at 2,000 connections) to
 * the broker's. That queueing is reported apart as client_lag; when it
 * grows, split the connections over more processes.
 *
 * wss:// connections speak TLS with OpenSSL in the same loop: a non-blocking
 * SSL object per connection over a BIO of ours that reads with recvmsg()
 * (so the kernel receive times survive) and writes with MSG_NOSIGNAL, with
 * SSL_MODE_RELEASE_BUFFERS so that an idle connection holds no record
 * buffers. A TLS connection still costs its SSL object (kilobytes, see
 * client_memory in the summary). ws:// connections never touch OpenSSL:
 * they read and write their socket directly, as before.
 *
 * The JSON summary carries the raw histogram buckets, so that --merge can add
 * up the results of several processes (one process is limited to the open
 * files its RLIMIT_NOFILE allows). See --help and scripts/TOOLS.md. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "protocol/buf.h"
#include "protocol/codec.h"
#include "protocol/httpreq.h"
#include "protocol/json.h"

#define LG_RBUF_SIZE (256 * 1024) /* one read(), shared by every connection */
#define LG_HEAD_MAX 16384         /* a longer HTTP answer head is refused */
#define LG_GATHER_MAX (64u << 20) /* a longer sampled message is not sampled */
#define LG_EVENTS 1024
#define LG_WHY_MAX 160            /* the text kept for the first failure of a kind */

/* ---------------------------------------------------------------------- */
/* Histograms */

/* Log-bucketed, HdrHistogram-like: values below 2*SUB microseconds get a
 * bucket each, then every power of two is split into SUB buckets, so a
 * bucket is at most 1/64 (1.6%) of its values wide. Values are clamped to
 * 2^27 us (134 s). 1408 buckets, 11 KiB. */
#define LG_HIST_SUB_BITS 6
#define LG_HIST_SUB (1u << LG_HIST_SUB_BITS)
#define LG_HIST_LINEAR (2u * LG_HIST_SUB)
#define LG_HIST_MAX_BITS 27
#define LG_HIST_BUCKETS (LG_HIST_LINEAR + (LG_HIST_MAX_BITS - LG_HIST_SUB_BITS - 1) * LG_HIST_SUB)

struct lg_hist {
    uint64_t count;
    uint64_t min, max; /* exact, in us */
    uint64_t sum;      /* in us, for the mean */
    uint64_t b[LG_HIST_BUCKETS];
};

static unsigned lg_hist_index(uint64_t v)
{
    unsigned k;

    if (v < LG_HIST_LINEAR)
        return (unsigned)v;
    if (v >= (1ULL << LG_HIST_MAX_BITS))
        v = (1ULL << LG_HIST_MAX_BITS) - 1;
    k = 63u - (unsigned)__builtin_clzll(v); /* the octave: 2^k <= v < 2^(k+1) */
    return LG_HIST_LINEAR + (k - LG_HIST_SUB_BITS - 1) * LG_HIST_SUB +
           (unsigned)(v >> (k - LG_HIST_SUB_BITS)) - LG_HIST_SUB;
}

/* Lowest value of bucket i; *width gets the number of values in it. */
static uint64_t lg_hist_low(unsigned i, uint64_t *width)
{
    unsigned o, s, shift;

    if (i < LG_HIST_LINEAR) {
        *width = 1;
        return i;
    }
    o = (i - LG_HIST_LINEAR) / LG_HIST_SUB;
    s = (i - LG_HIST_LINEAR) % LG_HIST_SUB;
    shift = o + 1; /* octave k = o + SUB_BITS + 1, bucket width 2^(k - SUB_BITS) */
    *width = 1ULL << shift;
    return (uint64_t)(LG_HIST_SUB + s) << shift;
}

static void lg_hist_record(struct lg_hist *h, uint64_t v)
{
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->count++;
    h->sum += v;
    h->b[lg_hist_index(v)]++;
}

static void lg_hist_add(struct lg_hist *dst, const struct lg_hist *src)
{
    unsigned i;

    if (src->count == 0)
        return;
    if (dst->count == 0 || src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    dst->count += src->count;
    dst->sum += src->sum;
    for (i = 0; i < LG_HIST_BUCKETS; i++)
        dst->b[i] += src->b[i];
}

/* The value at quantile q (0..1): the highest value of the bucket holding
 * that rank (HdrHistogram's "highest equivalent value"), never above the
 * exact maximum. 0 when empty. */
static uint64_t lg_hist_quantile(const struct lg_hist *h, double q)
{
    uint64_t rank, seen = 0, width, hi;
    unsigned i;

    if (h->count == 0)
        return 0;
    rank = (uint64_t)ceil(q * (double)h->count);
    if (rank < 1)
        rank = 1;
    for (i = 0; i < LG_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            hi = lg_hist_low(i, &width) + width - 1;
            return hi < h->max ? hi : h->max;
        }
    }
    return h->max;
}

/* Microseconds as milliseconds with three decimals (exact in the JSON). */
static double lg_ms(double us)
{
    return round(us) / 1000.0;
}

/* ---------------------------------------------------------------------- */
/* Results: what one run measured, and what --merge adds up */

enum lg_fail {
    LG_FAIL_REFUSED,   /* connect: ECONNREFUSED */
    LG_FAIL_CONNECT,   /* connect or socket: any other error */
    LG_FAIL_TIMEOUT,   /* not ready within --timeout */
    LG_FAIL_HTTP,      /* an HTTP status other than 101 */
    LG_FAIL_CLOSED,    /* EOF or reset before ready */
    LG_FAIL_HANDSHAKE, /* 101 without a valid accept, or a bad frame before ready */
    LG_FAIL_SUBSCRIBE, /* the subscribe got an error instead of an ack */
    LG_FAIL_IO,        /* a write to the socket failed */
    LG_FAIL_TLS_VERIFY,/* the server's certificate did not verify (wss://) */
    LG_FAIL_TLS,       /* any other TLS handshake failure */
    LG_FAIL_N
};

static const char *const lg_fail_names[LG_FAIL_N] = {
    "refused", "connect_error", "timeout", "http_status",
    "closed", "bad_handshake", "subscribe_error", "io",
    "tls_verify", "tls_handshake"};

/* What a failure says when there is no errno or TLS reason to tell. */
static const char *const lg_fail_texts[LG_FAIL_N] = {
    "connection refused", "connect failed", "not ready within --timeout", "HTTP status",
    "closed before ready", "invalid upgrade answer or frame before ready",
    "error answer to the subscribe", "write failed",
    "certificate verify failed", "TLS handshake failed"};

/* A small table of numeric codes and their counts (HTTP statuses, close
 * codes). Codes past LG_CODES_MAX distinct ones are counted under 0. */
#define LG_CODES_MAX 32

struct lg_codes {
    unsigned n;
    struct {
        unsigned code;
        uint64_t count;
    } e[LG_CODES_MAX];
};

static void lg_codes_add(struct lg_codes *t, unsigned code, uint64_t count)
{
    unsigned i;

    for (i = 0; i < t->n; i++)
        if (t->e[i].code == code)
            break;
    if (i == t->n) {
        if (t->n == LG_CODES_MAX) {
            code = 0;
            for (i = 0; i < t->n && t->e[i].code != 0; i++)
                ;
            if (i == t->n)
                i = t->n - 1;
        } else {
            t->n++;
        }
        t->e[i].code = code;
    }
    t->e[i].count += count;
}

struct lg_result {
    unsigned processes;
    json_t *config;          /* owned */
    uint64_t target, opened, failed, closed, open_at_end;
    uint64_t fail[LG_FAIL_N];
    char why[LG_FAIL_N][LG_WHY_MAX]; /* the first failure of each kind; "" if none */
    struct lg_codes http;    /* statuses of LG_FAIL_HTTP */
    struct lg_codes close;   /* close codes of established connections */
    uint64_t err_protocol;   /* broker frames that break RFC 6455 */
    uint64_t err_io;         /* socket errors on established connections */
    uint64_t err_tls;        /* TLS errors on established connections */
    uint64_t frames, messages, payload_bytes;
    uint64_t bytes;          /* application bytes: the HTTP answer and the
                                WebSocket stream (decrypted over TLS) */
    uint64_t wire_bytes;     /* read from the sockets: TLS records over wss://,
                                the same as bytes over ws:// */
    uint64_t sampled_frames, bad_frames, no_ts;
    double elapsed_s, measure_s, connect_s;
    double frames_ps, messages_ps, bytes_ps, wire_bytes_ps;
    struct lg_hist tcp;      /* connect() to TCP established */
    struct lg_hist upgrade;  /* connect() to 101 */
    struct lg_hist ready;    /* connect() to ack (frame mode) */
    struct lg_hist latency;  /* publish to kernel receipt, per message */
    struct lg_hist lag;      /* kernel receipt to our parse, per sampled frame */
    uint64_t kernel_ts;      /* sampled frames timed by the kernel */
    /* TLS handshakes, full and resumed (their counts are the histograms'). */
    uint64_t tls_offered;    /* connects that offered a kept session */
    struct lg_hist tls_full, tls_resumed;         /* connect() to TLS established */
    struct lg_hist upgrade_full, upgrade_resumed; /* connect() to 101, by kind */
    char tls_negotiated[64]; /* protocol and cipher of the first handshake */
    /* This process's memory, for the cost of a connection. */
    uint64_t rss_before_kib; /* before the first connect() */
    uint64_t rss_ready_kib;  /* when every connection was ready or failed */
    uint64_t rss_end_kib;    /* at the end, before the connections close */
    /* Resume and history (--since, --history, --expect). */
    uint64_t acks_recovered, acks_not_recovered; /* "recovered" in the acks */
    struct lg_hist complete; /* connect() to the --expect-th message */
    double complete_s;       /* first connect() to the last connection's */
};

static void lg_result_add(struct lg_result *dst, const struct lg_result *src)
{
    unsigned i;

    dst->processes += src->processes;
    dst->target += src->target;
    dst->opened += src->opened;
    dst->failed += src->failed;
    dst->closed += src->closed;
    dst->open_at_end += src->open_at_end;
    for (i = 0; i < LG_FAIL_N; i++) {
        dst->fail[i] += src->fail[i];
        if (dst->why[i][0] == '\0')
            memcpy(dst->why[i], src->why[i], sizeof(dst->why[i]));
    }
    for (i = 0; i < src->http.n; i++)
        lg_codes_add(&dst->http, src->http.e[i].code, src->http.e[i].count);
    for (i = 0; i < src->close.n; i++)
        lg_codes_add(&dst->close, src->close.e[i].code, src->close.e[i].count);
    dst->err_protocol += src->err_protocol;
    dst->err_io += src->err_io;
    dst->err_tls += src->err_tls;
    dst->frames += src->frames;
    dst->messages += src->messages;
    dst->bytes += src->bytes;
    dst->wire_bytes += src->wire_bytes;
    dst->payload_bytes += src->payload_bytes;
    dst->sampled_frames += src->sampled_frames;
    dst->bad_frames += src->bad_frames;
    dst->no_ts += src->no_ts;
    dst->kernel_ts += src->kernel_ts;
    /* The processes of one test run side by side: time spans are the
     * longest, rates add up. */
    dst->elapsed_s = fmax(dst->elapsed_s, src->elapsed_s);
    dst->measure_s = fmax(dst->measure_s, src->measure_s);
    dst->connect_s = fmax(dst->connect_s, src->connect_s);
    dst->frames_ps += src->frames_ps;
    dst->messages_ps += src->messages_ps;
    dst->bytes_ps += src->bytes_ps;
    dst->wire_bytes_ps += src->wire_bytes_ps;
    lg_hist_add(&dst->tcp, &src->tcp);
    lg_hist_add(&dst->upgrade, &src->upgrade);
    lg_hist_add(&dst->ready, &src->ready);
    lg_hist_add(&dst->latency, &src->latency);
    lg_hist_add(&dst->lag, &src->lag);
    dst->tls_offered += src->tls_offered;
    lg_hist_add(&dst->tls_full, &src->tls_full);
    lg_hist_add(&dst->tls_resumed, &src->tls_resumed);
    lg_hist_add(&dst->upgrade_full, &src->upgrade_full);
    lg_hist_add(&dst->upgrade_resumed, &src->upgrade_resumed);
    if (dst->tls_negotiated[0] == '\0')
        memcpy(dst->tls_negotiated, src->tls_negotiated, sizeof(dst->tls_negotiated));
    /* Memory of processes side by side adds up. */
    dst->rss_before_kib += src->rss_before_kib;
    dst->rss_ready_kib += src->rss_ready_kib;
    dst->rss_end_kib += src->rss_end_kib;
    dst->acks_recovered += src->acks_recovered;
    dst->acks_not_recovered += src->acks_not_recovered;
    lg_hist_add(&dst->complete, &src->complete);
    dst->complete_s = fmax(dst->complete_s, src->complete_s);
}

/* ---------------------------------------------------------------------- */
/* JSON summary, written and read back with jansson */

#define LG_JI(v) ((json_int_t)(v))

static json_t *lg_hist_json(const struct lg_hist *h)
{
    json_t *b = json_array();
    uint64_t width;
    unsigned i;

    if (b == NULL)
        return NULL;
    for (i = 0; i < LG_HIST_BUCKETS; i++) {
        if (h->b[i] == 0)
            continue;
        if (json_array_append_new(b, json_pack("[II]", LG_JI(lg_hist_low(i, &width)),
                                               LG_JI(h->b[i]))) != 0) {
            json_decref(b);
            return NULL;
        }
    }
    return json_pack("{sI sf sf sf sf sf sf sf sI so}",
                     "count", LG_JI(h->count),
                     "min_ms", lg_ms((double)h->min),
                     "mean_ms", h->count ? lg_ms((double)h->sum / (double)h->count) : 0.0,
                     "p50_ms", lg_ms((double)lg_hist_quantile(h, 0.50)),
                     "p90_ms", lg_ms((double)lg_hist_quantile(h, 0.90)),
                     "p99_ms", lg_ms((double)lg_hist_quantile(h, 0.99)),
                     "p999_ms", lg_ms((double)lg_hist_quantile(h, 0.999)),
                     "max_ms", lg_ms((double)h->max),
                     "sum_us", LG_JI(h->sum),
                     "buckets", b);
}

/* Reads back what lg_hist_json() wrote. Returns 0, or -1 when o is not
 * such an object. */
static int lg_hist_load(json_t *o, struct lg_hist *h)
{
    json_int_t count = 0, sum = 0, lo, n;
    double min_ms = 0, max_ms = 0;
    json_t *b = NULL, *pair;
    size_t i;

    memset(h, 0, sizeof(*h));
    if (json_unpack(o, "{sI sF sF sI so}", "count", &count, "min_ms", &min_ms,
                    "max_ms", &max_ms, "sum_us", &sum, "buckets", &b) != 0 ||
        !json_is_array(b) || count < 0 || sum < 0)
        return -1;
    h->count = (uint64_t)count;
    h->sum = (uint64_t)sum;
    h->min = (uint64_t)llround(min_ms * 1000.0);
    h->max = (uint64_t)llround(max_ms * 1000.0);
    json_array_foreach(b, i, pair) {
        if (json_unpack(pair, "[II]", &lo, &n) != 0 || lo < 0 || n < 0)
            return -1;
        h->b[lg_hist_index((uint64_t)lo)] += (uint64_t)n;
    }
    return 0;
}

static json_t *lg_codes_json(const struct lg_codes *t)
{
    json_t *o = json_object();
    char key[16];
    unsigned i;

    if (o == NULL)
        return NULL;
    for (i = 0; i < t->n; i++) {
        snprintf(key, sizeof(key), "%u", t->e[i].code);
        if (json_object_set_new(o, key, json_integer(LG_JI(t->e[i].count))) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static int lg_codes_load(json_t *o, struct lg_codes *t)
{
    const char *key;
    json_t *v;
    char *end;
    unsigned long code;

    if (o == NULL)
        return 0;
    if (!json_is_object(o))
        return -1;
    json_object_foreach(o, key, v) {
        code = strtoul(key, &end, 10);
        if (*end != '\0' || !json_is_integer(v) || json_integer_value(v) < 0)
            return -1;
        lg_codes_add(t, (unsigned)code, (uint64_t)json_integer_value(v));
    }
    return 0;
}

static json_t *lg_fail_json(const uint64_t *fail)
{
    json_t *o = json_object();
    unsigned i;

    if (o == NULL)
        return NULL;
    for (i = 0; i < LG_FAIL_N; i++) {
        if (json_object_set_new(o, lg_fail_names[i], json_integer(LG_JI(fail[i]))) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* The first failure of each kind that happened, {"kind": "text"}. */
static json_t *lg_why_json(const struct lg_result *r)
{
    json_t *o = json_object();
    unsigned i;

    if (o == NULL)
        return NULL;
    for (i = 0; i < LG_FAIL_N; i++) {
        if (r->why[i][0] == '\0')
            continue;
        if (json_object_set_new(o, lg_fail_names[i], json_string(r->why[i])) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static json_t *lg_tls_json(const struct lg_result *r)
{
    return json_pack("{sI sI sI sI ss s{so so} s{so so}}",
                     "handshakes", LG_JI(r->tls_full.count + r->tls_resumed.count),
                     "full", LG_JI(r->tls_full.count),
                     "resumed", LG_JI(r->tls_resumed.count),
                     "offered", LG_JI(r->tls_offered),
                     "negotiated", r->tls_negotiated,
                     "established",
                         "full", lg_hist_json(&r->tls_full),
                         "resumed", lg_hist_json(&r->tls_resumed),
                     "upgrade",
                         "full", lg_hist_json(&r->upgrade_full),
                         "resumed", lg_hist_json(&r->upgrade_resumed));
}

/* RSS grown from before the first connect() to the end, per connection
 * open at the end; 0 when there is none. */
static double lg_per_conn_bytes(const struct lg_result *r)
{
    if (r->open_at_end == 0 || r->rss_end_kib < r->rss_before_kib)
        return 0;
    return round((double)(r->rss_end_kib - r->rss_before_kib) * 1024.0 / (double)r->open_at_end);
}

/* The summary of r; NULL when memory runs out. The layout is documented in
 * scripts/TOOLS.md, and lg_result_load() must stay its mirror. */
static json_t *lg_result_json(const struct lg_result *r)
{
    static struct lg_hist tls_all; /* 11 KiB: not on the stack */

    memset(&tls_all, 0, sizeof(tls_all));
    lg_hist_add(&tls_all, &r->tls_full);
    lg_hist_add(&tls_all, &r->tls_resumed);
    return json_pack(
        "{ss sI sO* sf sf"
        " s{sI sI sI sI sI so so so}"
        " s{sf so so so so}"
        " s{sI sI sI sI sI sf sf sf sf sI sI sI sI}"
        " so so so so s{sI sI sI sf} s{sI sI sI} s{sI sI so sf}}",
        "tool", "loadgen",
        "processes", LG_JI(r->processes),
        "config", r->config,
        "elapsed_s", round(r->elapsed_s * 1000.0) / 1000.0,
        "measure_s", round(r->measure_s * 1000.0) / 1000.0,
        "connections",
            "target", LG_JI(r->target),
            "opened", LG_JI(r->opened),
            "failed", LG_JI(r->failed),
            "closed", LG_JI(r->closed),
            "open_at_end", LG_JI(r->open_at_end),
            "failures", lg_fail_json(r->fail),
            "first_failure", lg_why_json(r),
            "http_status", lg_codes_json(&r->http),
        "handshake",
            "all_connected_s", round(r->connect_s * 1000.0) / 1000.0,
            "tcp", lg_hist_json(&r->tcp),
            "tls", lg_hist_json(&tls_all),
            "upgrade", lg_hist_json(&r->upgrade),
            "ready", lg_hist_json(&r->ready),
        "received",
            "frames", LG_JI(r->frames),
            "messages", LG_JI(r->messages),
            "bytes", LG_JI(r->bytes),
            "wire_bytes", LG_JI(r->wire_bytes),
            "payload_bytes", LG_JI(r->payload_bytes),
            "frames_per_s", round(r->frames_ps * 10.0) / 10.0,
            "messages_per_s", round(r->messages_ps * 10.0) / 10.0,
            "bytes_per_s", round(r->bytes_ps),
            "wire_bytes_per_s", round(r->wire_bytes_ps),
            "sampled_frames", LG_JI(r->sampled_frames),
            "bad_frames", LG_JI(r->bad_frames),
            "messages_without_ts", LG_JI(r->no_ts),
            "kernel_timestamps", LG_JI(r->kernel_ts),
        "tls", lg_tls_json(r),
        "latency", lg_hist_json(&r->latency),
        "client_lag", lg_hist_json(&r->lag),
        "close_codes", lg_codes_json(&r->close),
        "client_memory",
            "rss_before_kib", LG_JI(r->rss_before_kib),
            "rss_ready_kib", LG_JI(r->rss_ready_kib),
            "rss_end_kib", LG_JI(r->rss_end_kib),
            "per_connection_bytes", lg_per_conn_bytes(r),
        "errors",
            "protocol", LG_JI(r->err_protocol),
            "io", LG_JI(r->err_io),
            "tls", LG_JI(r->err_tls),
        "resume",
            "recovered", LG_JI(r->acks_recovered),
            "not_recovered", LG_JI(r->acks_not_recovered),
            "complete", lg_hist_json(&r->complete),
            "all_complete_s", round(r->complete_s * 1000.0) / 1000.0);
}

/* Reads back what lg_tls_json() wrote; a summary without TLS (older
 * loadgen) leaves r's TLS fields zero. Returns 0 or -1. */
static int lg_tls_load(json_t *o, struct lg_result *r)
{
    json_int_t offered = 0;
    const char *negotiated = "";
    json_t *full, *resumed, *up_full, *up_resumed;

    if (o == NULL)
        return 0;
    if (json_unpack(o, "{sI s?s s{so so} s{so so}}", "offered", &offered,
                    "negotiated", &negotiated,
                    "established", "full", &full, "resumed", &resumed,
                    "upgrade", "full", &up_full, "resumed", &up_resumed) != 0 ||
        offered < 0 || lg_hist_load(full, &r->tls_full) != 0 ||
        lg_hist_load(resumed, &r->tls_resumed) != 0 ||
        lg_hist_load(up_full, &r->upgrade_full) != 0 ||
        lg_hist_load(up_resumed, &r->upgrade_resumed) != 0)
        return -1;
    r->tls_offered = (uint64_t)offered;
    snprintf(r->tls_negotiated, sizeof(r->tls_negotiated), "%s", negotiated);
    return 0;
}

/* Fills r from a summary (adding nothing to what r held: r must be zeroed).
 * Returns 0, or -1 with *why set when root is not a loadgen summary. Parts
 * that older loadgen versions did not write are optional. */
static int lg_result_load(json_t *root, struct lg_result *r, const char **why)
{
    json_int_t processes, target, opened, failed, closed, open_end, frames, messages,
        bytes, payload, sampled, bad, no_ts, kernel_ts, protocol, io, wire = -1, err_tls = 0,
        rss_before = 0, rss_ready = 0, rss_end = 0, recovered = 0, not_recovered = 0;
    json_t *config, *failures, *first = NULL, *http = NULL, *close = NULL, *tcp = NULL,
        *upgrade, *ready, *latency, *lag, *tls = NULL, *memory = NULL, *resume = NULL,
        *complete = NULL;
    const char *tool, *key;
    json_t *v;
    unsigned i;

    if (json_unpack(root,
                    "{ss sI so sF sF"
                    " s{sI sI sI sI sI so s?o s?o}"
                    " s{sF s?o so so}"
                    " s{sI sI sI s?I sI sF sF sF s?F sI sI sI sI}"
                    " s?o so so s?o s?o s{sI sI s?I} s?o}",
                    "tool", &tool,
                    "processes", &processes,
                    "config", &config,
                    "elapsed_s", &r->elapsed_s,
                    "measure_s", &r->measure_s,
                    "connections",
                        "target", &target, "opened", &opened, "failed", &failed,
                        "closed", &closed, "open_at_end", &open_end,
                        "failures", &failures, "first_failure", &first,
                        "http_status", &http,
                    "handshake",
                        "all_connected_s", &r->connect_s,
                        "tcp", &tcp, "upgrade", &upgrade, "ready", &ready,
                    "received",
                        "frames", &frames, "messages", &messages, "bytes", &bytes,
                        "wire_bytes", &wire,
                        "payload_bytes", &payload,
                        "frames_per_s", &r->frames_ps,
                        "messages_per_s", &r->messages_ps,
                        "bytes_per_s", &r->bytes_ps,
                        "wire_bytes_per_s", &r->wire_bytes_ps,
                        "sampled_frames", &sampled, "bad_frames", &bad,
                        "messages_without_ts", &no_ts,
                        "kernel_timestamps", &kernel_ts,
                    "tls", &tls,
                    "latency", &latency,
                    "client_lag", &lag,
                    "close_codes", &close,
                    "client_memory", &memory,
                    "errors", "protocol", &protocol, "io", &io, "tls", &err_tls,
                    "resume", &resume) != 0 ||
        strcmp(tool, "loadgen") != 0) {
        *why = "not a loadgen summary";
        return -1;
    }
    r->processes = (unsigned)processes;
    r->config = json_incref(config);
    r->target = (uint64_t)target;
    r->opened = (uint64_t)opened;
    r->failed = (uint64_t)failed;
    r->closed = (uint64_t)closed;
    r->open_at_end = (uint64_t)open_end;
    for (i = 0; i < LG_FAIL_N; i++) {
        v = json_object_get(failures, lg_fail_names[i]);
        r->fail[i] = json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0;
    }
    if (json_is_object(first)) {
        json_object_foreach(first, key, v) {
            for (i = 0; i < LG_FAIL_N && strcmp(key, lg_fail_names[i]) != 0; i++)
                ;
            if (i < LG_FAIL_N && json_is_string(v))
                snprintf(r->why[i], sizeof(r->why[i]), "%s", json_string_value(v));
        }
    }
    r->frames = (uint64_t)frames;
    r->messages = (uint64_t)messages;
    r->bytes = (uint64_t)bytes;
    /* Without TLS, what was read is what went over the wire. */
    r->wire_bytes = wire >= 0 ? (uint64_t)wire : (uint64_t)bytes;
    if (wire < 0)
        r->wire_bytes_ps = r->bytes_ps;
    r->payload_bytes = (uint64_t)payload;
    r->sampled_frames = (uint64_t)sampled;
    r->bad_frames = (uint64_t)bad;
    r->no_ts = (uint64_t)no_ts;
    r->kernel_ts = (uint64_t)kernel_ts;
    r->err_protocol = (uint64_t)protocol;
    r->err_io = (uint64_t)io;
    r->err_tls = (uint64_t)err_tls;
    if (lg_codes_load(http, &r->http) != 0 || lg_codes_load(close, &r->close) != 0) {
        *why = "malformed http_status or close_codes";
        return -1;
    }
    if ((tcp != NULL && lg_hist_load(tcp, &r->tcp) != 0) ||
        lg_hist_load(upgrade, &r->upgrade) != 0 || lg_hist_load(ready, &r->ready) != 0 ||
        lg_hist_load(latency, &r->latency) != 0 || lg_hist_load(lag, &r->lag) != 0) {
        *why = "malformed histogram";
        return -1;
    }
    if (lg_tls_load(tls, r) != 0) {
        *why = "malformed tls";
        return -1;
    }
    if (memory != NULL &&
        (json_unpack(memory, "{sI sI sI}", "rss_before_kib", &rss_before,
                     "rss_ready_kib", &rss_ready, "rss_end_kib", &rss_end) != 0 ||
         rss_before < 0 || rss_ready < 0 || rss_end < 0)) {
        *why = "malformed client_memory";
        return -1;
    }
    r->rss_before_kib = (uint64_t)rss_before;
    r->rss_ready_kib = (uint64_t)rss_ready;
    r->rss_end_kib = (uint64_t)rss_end;
    if (resume != NULL &&
        (json_unpack(resume, "{sI sI so sF}", "recovered", &recovered,
                     "not_recovered", &not_recovered, "complete", &complete,
                     "all_complete_s", &r->complete_s) != 0 ||
         recovered < 0 || not_recovered < 0 || lg_hist_load(complete, &r->complete) != 0)) {
        *why = "malformed resume";
        return -1;
    }
    r->acks_recovered = (uint64_t)recovered;
    r->acks_not_recovered = (uint64_t)not_recovered;
    return 0;
}

/* Writes r to path, or to stdout when path is NULL. Returns 0 or -1. */
static int lg_result_write(const struct lg_result *r, const char *path)
{
    json_t *j = lg_result_json(r);
    FILE *f = stdout;
    int rc = -1;

    if (j == NULL) {
        fprintf(stderr, "loadgen: cannot build the summary (out of memory)\n");
        return -1;
    }
    if (path != NULL && (f = fopen(path, "w")) == NULL) {
        fprintf(stderr, "loadgen: %s: %s\n", path, strerror(errno));
        goto done;
    }
    if (json_dumpf(j, f, JSON_INDENT(2) | JSON_REAL_PRECISION(15)) != 0 ||
        fputc('\n', f) == EOF || fflush(f) != 0) {
        fprintf(stderr, "loadgen: cannot write the summary to %s\n", path ? path : "stdout");
        goto done;
    }
    rc = 0;
done:
    if (f != NULL && f != stdout && fclose(f) != 0)
        rc = -1;
    json_decref(j);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Options and run state */

enum lg_state {
    LG_NEW = 0,
    LG_CONNECTING, /* connect() in progress */
    LG_TLS,        /* TCP up, TLS handshake in progress (wss://) */
    LG_UPGRADING,  /* request sent, reading the HTTP answer */
    LG_SUBSCRIBING,/* 101 received, subscribe sent, waiting for the ack */
    LG_OPEN,       /* counting batches */
    LG_DONE        /* closed for good; stale events are ignored */
};

/* Streaming count of the elements of the batch envelope's "messages" array
 * ({"type":"batch","channel":"...","messages":[...]}, PROTOCOL.md section
 * 4): the only array in the envelope's top-level object, so every value
 * that starts directly inside a depth-2 array is a message. Only nesting and
 * string boundaries are tracked; the sampled parse checks the count. */
struct lg_scan {
    uint32_t count;
    uint16_t depth;
    uint8_t in_str; /* inside a string literal */
    uint8_t esc;    /* ... right after a backslash */
    uint8_t arr;    /* the container at depth 2 is an array */
    uint8_t want;   /* the next value at depth 2 starts a message */
};

/* Frame parser flags. */
#define LG_F_PAYLOAD 0x01 /* inside a frame's payload: left bytes to come */
#define LG_F_FIN 0x02     /* the current frame ends its message */
#define LG_F_IN_MSG 0x04  /* a data message is open (fragments may follow) */
#define LG_F_GATHER 0x08  /* the open data message is kept whole in c->in */
#define LG_F_COMPLETE 0x10 /* the --expect-th message has arrived */

/* The TLS side of a wss:// connection, allocated with its handshake; a
 * ws:// connection has none. */
struct lg_tls {
    SSL *ssl;
    struct proto_buf out; /* client frames SSL_write() could not take yet;
                             empty (no memory) unless a write is blocked */
    uint8_t flags;        /* LG_T_* */
};

#define LG_T_EPOLLIN 0x01  /* registered for EPOLLIN */
#define LG_T_EPOLLOUT 0x02 /* registered for EPOLLOUT */
#define LG_T_RD_OUT 0x04   /* the handshake or SSL_read() waits until the socket takes bytes */
#define LG_T_WR_OUT 0x08   /* the blocked SSL_write() waits likewise (else it waits to read) */
#define LG_T_OFFERED 0x10  /* a kept session was offered (--tls-resume) */
#define LG_T_FATAL 0x20    /* OpenSSL reported a fatal error: no close_notify */

struct lg_conn {
    struct lg_conn *prev, *next; /* handshakes in flight, oldest first */
    int64_t t0;                  /* connect() called, monotonic us */
    uint64_t left;               /* payload bytes of the current frame to come */
    struct proto_buf in;         /* HTTP answer or gathered message, only while
                                    incomplete; empty (no memory) otherwise */
    uint8_t *ctl;                /* a control frame split across reads */
    struct lg_tls *tls;          /* wss:// only; NULL for ws:// */
    struct lg_scan scan;
    uint32_t id;
    uint32_t nmsg;               /* data messages started, for --sample */
    uint32_t got;                /* messages received, up to --expect */
    int fd;
    uint8_t state;
    uint8_t flags;
    uint8_t opcode;              /* of the current frame */
    uint8_t hdr_len;             /* header bytes gathered across reads */
    uint8_t ctl_len;
    uint8_t hdr[10];
};

static struct {
    /* options */
    const char *url;
    uint32_t connections;
    uint32_t concurrency;
    uint32_t channels;
    const char *prefix;
    int query_mode;
    const char *filter;
    double duration;
    double interval;
    uint32_t sample;
    uint32_t source_ips;
    double timeout;
    const char *json_path;
    int quiet;
    int idle;
    const char *since_path;  /* --since FILE: positions to resume from */
    uint32_t history;        /* --history N: last N messages on subscribe */
    uint32_t expect;         /* --expect N: time each connection's N-th message */
    const char *ca;          /* --ca: the only trusted certificates */
    int insecure;            /* --insecure: no certificate check */
    int tls_resume;          /* --tls-resume */
    const char *tls_version; /* --tls-version as given, or NULL */
    /* from the URL */
    int tls;        /* wss:// */
    char *host;     /* for SNI and the certificate check */
    int host_is_ip; /* an IP literal: no SNI (RFC 6066 3), checked as an IP */
    char *hostport; /* for Host: */
    char *target;   /* path and query as sent, without the ?channels= we add */
    struct sockaddr_storage addr;
    socklen_t addrlen;
} opt = {
    .connections = 1,
    .concurrency = 100,
    .channels = 1,
    .prefix = "ch",
    .interval = 5,
    .sample = 1,
    .source_ips = 1,
    .timeout = 10,
};

static struct {
    int ep;
    struct lg_conn *conns;
    uint32_t next;                  /* the next connection to start */
    uint32_t inflight;              /* started, not yet ready or failed */
    uint32_t open;                  /* ready and not closed */
    struct lg_conn *fl_head, *fl_tail;
    int64_t start, first_connect, measure_start;
    int ramp_done;
    struct lg_hist lat_iv;          /* latency of the current report interval */
    struct lg_hist lag_iv;          /* client lag of the current report interval */
    int64_t rx_real;                /* kernel receipt of the current read, us
                                       since the epoch; 0 when unknown */
    struct {                        /* counters at the last report */
        int64_t t;
        uint64_t frames, messages, bytes, wire_bytes;
    } last, at_measure;
} lg;

/* TLS for every wss:// connection of the process. */
static struct {
    SSL_CTX *ctx;
    BIO_METHOD *bio;      /* lg_bio_*: the socket under each SSL */
    SSL_SESSION *session; /* offered on later connects (--tls-resume); owned */
} lg_ssl;

static struct lg_result res;
static uint8_t lg_rbuf[LG_RBUF_SIZE];
static struct proto_buf lg_out;     /* a client frame or request being built */
static struct proto_buf lg_scratch; /* a subscribe message being built */
static uint64_t lg_seed, lg_rng;
static volatile sig_atomic_t lg_stop;

static int64_t lg_clock_us(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t lg_mix64(uint64_t x)
{
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* splitmix64: masks need to be unpredictable to intermediaries, not secret. */
static uint64_t lg_rand(void)
{
    lg_rng += 0x9e3779b97f4a7c15ULL;
    return lg_mix64(lg_rng);
}

/* The Sec-WebSocket-Key of connection id: 16 random bytes derived from the
 * process's random seed, so that it can be recomputed to check the answer
 * instead of being stored in every connection. */
static void lg_ws_key(uint32_t id, char key[25])
{
    unsigned char raw[16];
    uint64_t a = lg_mix64(lg_seed ^ ((uint64_t)id << 1));
    uint64_t b = lg_mix64(lg_seed ^ ((uint64_t)id << 1 | 1));

    memcpy(raw, &a, 8);
    memcpy(raw + 8, &b, 8);
    EVP_EncodeBlock((unsigned char *)key, raw, 16);
}

/* Writes the channel name of connection id (P<id % K>) into out. */
static size_t lg_channel(uint32_t id, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s%u", opt.prefix, id % opt.channels);

    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* Where each channel resumes from (--since): PROTOCOL.md section 7's
 * position, indexed by the channel's number; NULL without --since. */
#define LG_EPOCH_MAX 64
struct lg_since {
    uint64_t offset;
    char epoch[LG_EPOCH_MAX + 1];
    uint8_t set;
};
static struct lg_since *lg_since;

/* Reads --since FILE: lines "CHANNEL OFFSET EPOCH" (blank lines and lines
 * starting with # are skipped), CHANNEL one of PREFIX0..PREFIX<K-1>.
 * Returns 0, or -1 after saying why. */
static int lg_since_load(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512], name[PROTO_CHANNEL_MAX + 2], epoch[LG_EPOCH_MAX + 2], *end;
    size_t plen = strlen(opt.prefix);
    unsigned long long off;
    unsigned long idx;
    unsigned lineno = 0;
    int rc = -1;

    if (f == NULL) {
        fprintf(stderr, "loadgen: --since %s: %s\n", path, strerror(errno));
        return -1;
    }
    if ((lg_since = calloc(opt.channels, sizeof(*lg_since))) == NULL) {
        fprintf(stderr, "loadgen: out of memory for --since\n");
        goto done;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        if (line[0] == '#' || line[strspn(line, " \t\r\n")] == '\0')
            continue;
        if (sscanf(line, "%257s %llu %65s", name, &off, epoch) != 3 ||
            strlen(epoch) > LG_EPOCH_MAX || strncmp(name, opt.prefix, plen) != 0 ||
            name[plen] < '0' || name[plen] > '9' ||
            (idx = strtoul(name + plen, &end, 10), *end != '\0') || idx >= opt.channels ||
            strspn(epoch, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_") !=
                strlen(epoch)) {
            fprintf(stderr, "loadgen: --since %s:%u: expected \"%s<0..%u> OFFSET EPOCH\"\n",
                    path, lineno, opt.prefix, opt.channels - 1);
            goto done;
        }
        lg_since[idx].offset = off;
        memcpy(lg_since[idx].epoch, epoch, strlen(epoch) + 1);
        lg_since[idx].set = 1;
    }
    if (ferror(f)) {
        fprintf(stderr, "loadgen: --since %s: read error\n", path);
        goto done;
    }
    rc = 0;
done:
    fclose(f);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Connection lifecycle */

static void lg_inflight_unlink(struct lg_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        lg.fl_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        lg.fl_tail = c->prev;
    c->prev = c->next = NULL;
    lg.inflight--;
}

/* Ends c's TLS: a close_notify when the handshake was done and nothing
 * fatal happened (best effort, like our close frame: nothing waits for the
 * peer's), then the SSL object and what waited to be written. */
static void lg_tls_free(struct lg_conn *c)
{
    struct lg_tls *t = c->tls;

    if (t->ssl != NULL) {
        if (SSL_is_init_finished(t->ssl) && !(t->flags & LG_T_FATAL) && SSL_shutdown(t->ssl) < 0)
            ERR_clear_error(); /* the socket is gone or full: leave without it */
        /* A session whose connection ended without our close_notify would be
         * marked not resumable when the SSL is freed (OpenSSL's
         * ssl_clear_bad_session), and with --tls-resume that session may be
         * the one every later connect offers. The connection's end says
         * nothing about the session: keep it usable. */
        SSL_set_shutdown(t->ssl, SSL_get_shutdown(t->ssl) | SSL_SENT_SHUTDOWN);
        SSL_free(t->ssl); /* and its BIO */
    }
    proto_buf_free(&t->out);
    free(t);
    c->tls = NULL;
}

/* Closes the socket and frees the buffers; c stays in the array as LG_DONE
 * so that events already fetched for it are ignored. */
static void lg_conn_release(struct lg_conn *c)
{
    if (c->tls != NULL) /* before the socket: close_notify goes over it */
        lg_tls_free(c);
    if (c->fd >= 0 && close(c->fd) != 0 && errno != EINTR)
        res.err_io++;
    c->fd = -1;
    proto_buf_free(&c->in);
    free(c->ctl);
    c->ctl = NULL;
    c->state = LG_DONE;
}

/* A connection that never became ready: count it under kind, and keep why
 * (borrowed) for the summary when it is the first of its kind, which is
 * also shown on stderr. */
static void lg_conn_fail_why(struct lg_conn *c, enum lg_fail kind, const char *why)
{
    res.failed++;
    res.fail[kind]++;
    if (res.why[kind][0] == '\0') {
        snprintf(res.why[kind], sizeof(res.why[kind]), "connection %u: %s", c->id, why);
        if (!opt.quiet)
            fprintf(stderr, "loadgen: %s: %s (first of its kind)\n", lg_fail_names[kind],
                    res.why[kind]);
    }
    lg_inflight_unlink(c);
    lg_conn_release(c);
}

/* The same, explained by err (an errno, or 0) and, for LG_FAIL_HTTP, by
 * the status. */
static void lg_conn_fail(struct lg_conn *c, enum lg_fail kind, int err, unsigned status)
{
    char why[LG_WHY_MAX];

    if (kind == LG_FAIL_HTTP) {
        lg_codes_add(&res.http, status, 1);
        snprintf(why, sizeof(why), "HTTP status %u", status);
    } else {
        snprintf(why, sizeof(why), "%s", err ? strerror(err) : lg_fail_texts[kind]);
    }
    lg_conn_fail_why(c, kind, why);
}

/* An established connection ended; code is the close code the broker sent,
 * 1006 when the connection went away without one (RFC 6455 7.1.5), or 0
 * when we closed it (counted elsewhere, not as a close code). */
static void lg_conn_closed(struct lg_conn *c, unsigned code)
{
    res.closed++;
    lg.open--;
    if (code != 0)
        lg_codes_add(&res.close, code, 1);
    lg_conn_release(c);
}

/* The connection went away (EOF, reset, or an error of ours): whichever of
 * the two above applies. */
static void lg_conn_lost(struct lg_conn *c, enum lg_fail kind, int err)
{
    if (c->state == LG_OPEN)
        lg_conn_closed(c, 1006);
    else
        lg_conn_fail(c, kind, err, 0);
}

static void lg_conn_ready(struct lg_conn *c, int64_t now)
{
    lg_inflight_unlink(c);
    c->state = LG_OPEN;
    lg.open++;
    res.opened++;
    if (!opt.query_mode)
        lg_hist_record(&res.ready, (uint64_t)(now - c->t0));
}

/* ---------------------------------------------------------------------- */
/* TLS: what the loop asks of the socket, and writes */

/* Registers c's socket for what its TLS waits for: always EPOLLIN (data,
 * or the end, may come at any time), EPOLLOUT only while the handshake, a
 * read or a blocked write waits until the socket takes bytes. Touches epoll
 * only when that changes. Returns 0, or -1 with errno set. */
static int lg_tls_interest(struct lg_conn *c)
{
    struct lg_tls *t = c->tls;
    int out = (t->flags & (LG_T_RD_OUT | LG_T_WR_OUT)) != 0;
    uint8_t want = (uint8_t)(LG_T_EPOLLIN | (out ? LG_T_EPOLLOUT : 0));
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};

    if ((t->flags & (LG_T_EPOLLIN | LG_T_EPOLLOUT)) == want)
        return 0;
    if (epoll_ctl(lg.ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        return -1;
    t->flags = (uint8_t)((t->flags & ~(LG_T_EPOLLIN | LG_T_EPOLLOUT)) | want);
    return 0;
}

/* SSL_write() on c returned r <= 0. Returns 0 when it only waits for the
 * socket, writable (LG_T_WR_OUT) or readable (a write that needs a read
 * first, as TLS may at any time; EPOLLIN is always registered), or -1 with
 * errno set when the connection failed. */
static int lg_tls_write_blocked(struct lg_conn *c, int r)
{
    struct lg_tls *t = c->tls;
    int err = errno, e = SSL_get_error(t->ssl, r);

    if (e == SSL_ERROR_WANT_WRITE) {
        t->flags |= LG_T_WR_OUT;
        return 0;
    }
    if (e == SSL_ERROR_WANT_READ) {
        t->flags &= (uint8_t)~LG_T_WR_OUT;
        return 0;
    }
    t->flags |= LG_T_FATAL;
    if (e == SSL_ERROR_SSL)
        res.err_tls++;
    ERR_clear_error(); /* OpenSSL wants the queue empty before the next call */
    errno = e == SSL_ERROR_SYSCALL && err != 0 ? err : EIO;
    return -1;
}

/* Retries the blocked write: SSL_write() again with what waits in t->out
 * (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER: the bytes may have moved, and more
 * may follow them). Returns 0, or -1 with errno set. */
static int lg_tls_flush(struct lg_conn *c)
{
    struct lg_tls *t = c->tls;
    int r = SSL_write(t->ssl, t->out.data, (int)t->out.len);

    if (r > 0) {
        proto_buf_free(&t->out); /* idle connections keep no buffer */
        t->flags &= (uint8_t)~LG_T_WR_OUT;
    } else if (lg_tls_write_blocked(c, r) != 0) {
        return -1;
    }
    return lg_tls_interest(c);
}

/* Writes a client message p[0..n) (borrowed) over TLS. Without
 * SSL_MODE_ENABLE_PARTIAL_WRITE, SSL_write() takes all of it or nothing;
 * when it cannot now, the bytes are copied to t->out, later messages queue
 * behind them, and the next event on the socket retries. Returns 0, or -1
 * with errno set when the connection is unusable. */
static int lg_tls_write(struct lg_conn *c, const void *p, size_t n)
{
    struct lg_tls *t = c->tls;
    int r;

    if (t->out.len > 0) { /* keep the order */
        if (proto_buf_append(&t->out, p, n) != 0) {
            errno = ENOMEM;
            return -1;
        }
        return lg_tls_flush(c);
    }
    r = SSL_write(t->ssl, p, (int)n);
    if (r > 0)
        return 0;
    if (lg_tls_write_blocked(c, r) != 0)
        return -1;
    if (proto_buf_append(&t->out, p, n) != 0) {
        errno = ENOMEM;
        return -1;
    }
    return lg_tls_interest(c);
}

/* Sends one masked client frame (RFC 6455 5.3). Returns 0, or -1 when the
 * socket did not take all of it: the stream is then unusable. Client frames
 * are tiny, and the broker reads them, so the send buffer never fills (over
 * TLS, a frame that must wait is kept, see lg_tls_write()). */
static int lg_send_frame(struct lg_conn *c, unsigned opcode, const void *payload, size_t n)
{
    const uint8_t *p = payload;
    size_t hl = n < 126 ? 2 : n < 65536 ? 4 : 10, i;
    uint32_t mask = (uint32_t)lg_rand();
    uint8_t *f, m[4];
    ssize_t w;

    proto_buf_reset(&lg_out);
    if (proto_buf_reserve(&lg_out, hl + 4 + n) != 0)
        return -1;
    f = (uint8_t *)lg_out.data;
    f[0] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        f[1] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        f[1] = 0x80 | 126;
        f[2] = (uint8_t)(n >> 8);
        f[3] = (uint8_t)n;
    } else {
        f[1] = 0x80 | 127;
        for (i = 0; i < 8; i++)
            f[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
    }
    memcpy(m, &mask, 4);
    memcpy(f + hl, m, 4);
    for (i = 0; i < n; i++)
        f[hl + 4 + i] = p[i] ^ m[i & 3];
    if (c->tls != NULL)
        return lg_tls_write(c, f, hl + 4 + n);
    w = send(c->fd, f, hl + 4 + n, MSG_NOSIGNAL);
    return w == (ssize_t)(hl + 4 + n) ? 0 : -1;
}

/* Answers a close, then ends the connection. code is what the broker sent
 * (1005 when it sent none). */
static void lg_close_received(struct lg_conn *c, unsigned code)
{
    uint8_t echo[2] = {(uint8_t)(code >> 8), (uint8_t)code};

    /* Best effort, unchecked: the broker closes the TCP connection after
     * its close frame whether or not ours arrives. */
    lg_send_frame(c, 0x8, echo, code == 1005 ? 0 : 2);
    if (c->state == LG_OPEN)
        lg_conn_closed(c, code);
    else
        lg_conn_fail(c, LG_FAIL_CLOSED, 0, 0);
}

/* The broker broke RFC 6455: tell it (1002) and end the connection. */
static void lg_protocol_error(struct lg_conn *c)
{
    static const uint8_t code[2] = {0x03, 0xEA}; /* 1002 */

    if (c->state != LG_OPEN) {
        lg_conn_fail(c, LG_FAIL_HANDSHAKE, 0, 0);
        return;
    }
    res.err_protocol++;
    if (lg_send_frame(c, 0x8, code, 2) != 0)
        res.err_io++;
    lg_conn_closed(c, 0);
}

/* ---------------------------------------------------------------------- */
/* Batches: counting and sampling */

static void lg_scan_feed(struct lg_scan *s, const uint8_t *p, const uint8_t *end)
{
    const uint8_t *q, *b;

    while (p < end) {
        if (s->in_str) {
            if (s->esc) {
                s->esc = 0;
                p++;
                continue;
            }
            /* Payloads are mostly string bytes: let memchr skip them. */
            q = memchr(p, '"', (size_t)(end - p));
            b = memchr(p, '\\', (size_t)((q ? q : end) - p));
            if (b != NULL) {
                s->esc = 1;
                p = b + 1;
            } else if (q != NULL) {
                s->in_str = 0;
                p = q + 1;
            } else {
                return;
            }
            continue;
        }
        switch (*p++) {
        case ' ': case '\t': case '\n': case '\r': case ':':
            break;
        case ',':
            s->want = s->depth == 2 && s->arr;
            break;
        case '{': case '[':
            s->count += s->want;
            s->want = 0;
            if (++s->depth == 2) {
                s->arr = p[-1] == '[';
                s->want = s->arr;
            }
            break;
        case '}': case ']':
            if (s->depth > 0 && --s->depth < 2)
                s->arr = 0;
            s->want = 0;
            break;
        case '"':
            s->in_str = 1;
            s->count += s->want;
            s->want = 0;
            break;
        default: /* a number or a literal */
            s->count += s->want;
            s->want = 0;
            break;
        }
    }
}

static const char *lg_skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* End of the JSON value at p in text already validated. */
static const char *lg_value_end(const char *p, const char *end)
{
    size_t depth = 0;
    const char *q;

    while (p < end) {
        switch (*p) {
        case '"':
            /* A quote ends the string unless an odd run of backslashes
             * precedes it. */
            for (q = p + 1; (q = memchr(q, '"', (size_t)(end - q))) != NULL; q++) {
                const char *b = q;
                while (b > p + 1 && b[-1] == '\\')
                    b--;
                if ((q - b) % 2 == 0)
                    break;
            }
            if (q == NULL)
                return end;
            p = q + 1;
            if (depth == 0)
                return p;
            continue;
        case '{': case '[':
            depth++;
            break;
        case '}': case ']':
            if (depth == 0)
                return p;
            if (--depth == 0)
                return p + 1;
            break;
        case ',': case ' ': case '\t': case '\n': case '\r':
            if (depth == 0)
                return p;
            break;
        default:
            break;
        }
        p++;
    }
    return p;
}

/* Records the latency of one message: its top-level "ts" member, publish
 * time in microseconds since the epoch. */
static void lg_latency_record(const char *p, size_t n, int64_t now)
{
    struct proto_json_obj_iter it;
    struct proto_json_span k, v;
    int64_t ts = 0;
    size_t i;

    if (proto_json_obj_begin(&it, p, n) != 0)
        goto no_ts;
    /* publish.c writes "ts" first, so this usually reads one member. */
    while (proto_json_obj_next(&it, &k, &v) == 1) {
        if (!proto_json_string_eq(k, "ts"))
            continue;
        if (v.n == 0 || v.n > 18 || v.p[0] < '0' || v.p[0] > '9')
            goto no_ts;
        for (i = 0; i < v.n && v.p[i] >= '0' && v.p[i] <= '9'; i++)
            ts = ts * 10 + (v.p[i] - '0');
        /* Both ends read CLOCK_REALTIME on one machine, or on machines kept
         * in step; a message "from the future" counts as 0. */
        lg_hist_record(&res.latency, now > ts ? (uint64_t)(now - ts) : 0);
        lg_hist_record(&lg.lat_iv, now > ts ? (uint64_t)(now - ts) : 0);
        return;
    }
no_ts:
    res.no_ts++;
}

/* A sampled batch frame, whole: validate it, check the streaming count,
 * and take a latency sample from every message. */
static void lg_sample(const uint8_t *m, size_t n, uint32_t counted)
{
    const char *text = (const char *)m, *p, *end, *e;
    struct proto_json_obj_iter it;
    struct proto_json_span k, v, msgs = {NULL, 0};
    int64_t now = lg_clock_us(CLOCK_REALTIME);
    uint32_t seen = 0;
    int r;

    res.sampled_frames++;
    /* Latency ends when the kernel received the bytes: one process
     * draining thousands of sockets would otherwise add its own queueing
     * to the broker's. That queueing is reported apart, as client_lag. */
    if (lg.rx_real > 0) {
        uint64_t lag = now > lg.rx_real ? (uint64_t)(now - lg.rx_real) : 0;
        lg_hist_record(&res.lag, lag);
        lg_hist_record(&lg.lag_iv, lag);
        res.kernel_ts++;
        now = lg.rx_real;
    }
    if (!proto_json_validate(text, n) || proto_json_obj_begin(&it, text, n) != 0)
        goto bad;
    while ((r = proto_json_obj_next(&it, &k, &v)) == 1)
        if (proto_json_string_eq(k, "messages"))
            msgs = v;
    if (r < 0 || proto_json_type_of(msgs) != PROTO_JSON_ARRAY)
        goto bad;
    p = msgs.p + 1;
    end = msgs.p + msgs.n - 1; /* the closing bracket */
    for (;;) {
        p = lg_skip_ws(p, end);
        if (p >= end)
            break;
        e = lg_value_end(p, end);
        seen++;
        lg_latency_record(p, (size_t)(e - p), now);
        p = lg_skip_ws(e, end);
        if (p < end && *p == ',')
            p++;
    }
    if (seen == counted)
        return;
bad:
    res.bad_frames++;
}

/* The answer to our subscribe: {"type":"ack",...} makes the connection
 * ready, anything else fails it. */
static void lg_ack_input(struct lg_conn *c, const uint8_t *m, size_t n)
{
    struct proto_json_obj_iter it;
    struct proto_json_span k, v, type = {NULL, 0}, recovered = {NULL, 0};
    int r;

    if (proto_json_obj_begin(&it, (const char *)m, n) != 0) {
        lg_conn_fail(c, LG_FAIL_HANDSHAKE, 0, 0);
        return;
    }
    while ((r = proto_json_obj_next(&it, &k, &v)) == 1) {
        if (proto_json_string_eq(k, "type"))
            type = v;
        else if (proto_json_string_eq(k, "recovered"))
            recovered = v;
    }
    if (r == 0 && proto_json_string_eq(type, "ack")) {
        /* A literal: the span is its bytes. */
        if (recovered.n == 4 && memcmp(recovered.p, "true", 4) == 0)
            res.acks_recovered++;
        else if (recovered.n == 5 && memcmp(recovered.p, "false", 5) == 0)
            res.acks_not_recovered++;
        lg_conn_ready(c, lg_clock_us(CLOCK_MONOTONIC));
    }
    else if (r == 0 && proto_json_string_eq(type, "error"))
        lg_conn_fail(c, LG_FAIL_SUBSCRIBE, 0, 0);
    else
        lg_conn_fail(c, LG_FAIL_HANDSHAKE, 0, 0);
}

/* ---------------------------------------------------------------------- */
/* WebSocket frames from the broker */

/* Header size of a server frame whose second byte is b1 (servers do not
 * mask; a masked frame is refused once its header is read). */
static size_t lg_hdr_size(uint8_t b1)
{
    uint8_t len7 = b1 & 0x7F;

    return len7 < 126 ? 2 : len7 == 126 ? 4 : 10;
}

/* A data message starts: decide whether to keep it whole. */
static void lg_message_begin(struct lg_conn *c)
{
    memset(&c->scan, 0, sizeof(c->scan));
    c->flags |= LG_F_IN_MSG;
    if (c->state == LG_SUBSCRIBING ||
        (!opt.idle && c->nmsg++ % opt.sample == 0))
        c->flags |= LG_F_GATHER;
}

/* Reads a complete frame header h. Returns 0, or -1 when the frame breaks
 * RFC 6455 (the connection is then ended). */
static int lg_frame_begin(struct lg_conn *c, const uint8_t *h)
{
    unsigned fin = h[0] & 0x80, op = h[0] & 0x0F, len7 = h[1] & 0x7F, i;
    uint64_t len = len7;

    if ((h[0] & 0x70) || (h[1] & 0x80)) /* RSV bits without extensions; masked */
        goto bad;
    if (len7 == 126) {
        len = (uint64_t)h[2] << 8 | h[3];
    } else if (len7 == 127) {
        for (len = 0, i = 0; i < 8; i++)
            len = len << 8 | h[2 + i];
        if (len >> 63)
            goto bad;
    }
    switch (op) {
    case 0x0:
        if (!(c->flags & LG_F_IN_MSG))
            goto bad;
        break;
    case 0x1: case 0x2:
        if (c->flags & LG_F_IN_MSG)
            goto bad;
        lg_message_begin(c);
        break;
    case 0x8: case 0x9: case 0xA:
        if (!fin || len > 125)
            goto bad;
        break;
    default:
        goto bad;
    }
    c->opcode = (uint8_t)op;
    c->left = len;
    c->flags = (uint8_t)((c->flags & ~LG_F_FIN) | LG_F_PAYLOAD | (fin ? LG_F_FIN : 0));
    return 0;
bad:
    lg_protocol_error(c);
    return -1;
}

static void lg_control_end(struct lg_conn *c, const uint8_t *p, size_t n)
{
    switch (c->opcode) {
    case 0x9: /* ping */
        if (lg_send_frame(c, 0xA, p, n) != 0)
            lg_conn_lost(c, LG_FAIL_IO, errno);
        break;
    case 0x8:
        if (n == 1)
            lg_protocol_error(c);
        else
            lg_close_received(c, n >= 2 ? (unsigned)p[0] << 8 | p[1] : 1005);
        break;
    default: /* pong */
        break;
    }
}

/* --expect: c has received count more messages; times its expect-th. */
static void lg_count_expected(struct lg_conn *c, uint32_t count)
{
    int64_t now;

    c->got = count >= opt.expect - c->got ? opt.expect : c->got + count;
    if (c->got < opt.expect)
        return;
    c->flags |= LG_F_COMPLETE;
    now = lg_clock_us(CLOCK_MONOTONIC);
    lg_hist_record(&res.complete, (uint64_t)(now - c->t0));
    res.complete_s = (double)(now - lg.first_connect) / 1e6;
}

/* A data frame ended; whole is the complete message when it lies in one
 * read (no copy), NULL when it was gathered in c->in. */
static void lg_data_end(struct lg_conn *c, const uint8_t *whole, size_t whole_len)
{
    const uint8_t *m = whole ? whole : (const uint8_t *)c->in.data;
    size_t n = whole ? whole_len : c->in.len;
    uint8_t gathered = c->flags & LG_F_GATHER;

    if (!(c->flags & LG_F_FIN))
        return;
    c->flags &= (uint8_t)~(LG_F_IN_MSG | LG_F_GATHER);
    if (c->state == LG_SUBSCRIBING) {
        lg_ack_input(c, m, n); /* may fail c, which frees c->in */
    } else {
        res.frames++;
        res.messages += c->scan.count;
        if (opt.expect > 0 && !(c->flags & LG_F_COMPLETE))
            lg_count_expected(c, c->scan.count);
        if (gathered)
            lg_sample(m, n, c->scan.count);
    }
    proto_buf_free(&c->in);
}

/* take payload bytes of the current frame arrived at p. */
static void lg_payload_input(struct lg_conn *c, const uint8_t *p, size_t take)
{
    const uint8_t *whole = NULL;

    if (c->opcode >= 0x8) {
        if (c->ctl == NULL && take == c->left) {
            whole = p;
        } else {
            if (c->ctl == NULL && (c->ctl = malloc(125)) == NULL) {
                lg_conn_lost(c, LG_FAIL_IO, ENOMEM);
                return;
            }
            memcpy(c->ctl + c->ctl_len, p, take);
            c->ctl_len = (uint8_t)(c->ctl_len + take);
        }
        c->left -= take;
        if (c->left > 0)
            return;
        c->flags &= (uint8_t)~LG_F_PAYLOAD;
        if (whole != NULL) {
            lg_control_end(c, whole, take);
        } else {
            uint8_t *ctl = c->ctl;
            size_t n = c->ctl_len;
            c->ctl = NULL;
            c->ctl_len = 0;
            lg_control_end(c, ctl, n);
            free(ctl);
        }
        return;
    }
    res.payload_bytes += take;
    if (c->state == LG_OPEN && !opt.idle)
        lg_scan_feed(&c->scan, p, p + take);
    if (c->flags & LG_F_GATHER) {
        if (c->in.len == 0 && take == c->left && (c->flags & LG_F_FIN)) {
            whole = p;
        } else if (c->in.len + take > LG_GATHER_MAX ||
                   proto_buf_append(&c->in, p, take) != 0) {
            if (c->state == LG_SUBSCRIBING) {
                lg_conn_fail(c, LG_FAIL_HANDSHAKE, ENOMEM, 0);
                return;
            }
            /* Too big to keep: count it without sampling. */
            c->flags &= (uint8_t)~LG_F_GATHER;
            proto_buf_free(&c->in);
        }
    }
    c->left -= take;
    if (c->left > 0)
        return;
    c->flags &= (uint8_t)~LG_F_PAYLOAD;
    lg_data_end(c, whole, take);
}

/* WebSocket bytes p[0..n) from the broker. Stops when the connection ends. */
static void lg_ws_input(struct lg_conn *c, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n, *h;
    size_t take, hl;

    while (p < end && c->state != LG_DONE) {
        if (c->flags & LG_F_PAYLOAD) {
            take = c->left < (uint64_t)(end - p) ? (size_t)c->left : (size_t)(end - p);
            lg_payload_input(c, p, take);
            p += take;
            continue;
        }
        if (c->hdr_len == 0 && end - p >= 2 && (size_t)(end - p) >= (hl = lg_hdr_size(p[1]))) {
            h = p; /* the usual case: the whole header is here */
            p += hl;
        } else {
            c->hdr[c->hdr_len++] = *p++;
            if (c->hdr_len < 2 || c->hdr_len < lg_hdr_size(c->hdr[1]))
                continue;
            h = c->hdr;
            c->hdr_len = 0;
        }
        if (lg_frame_begin(c, h) != 0)
            return;
        if (c->left == 0)
            lg_payload_input(c, p, 0);
    }
}

/* ---------------------------------------------------------------------- */
/* The opening handshake */

static int lg_name_is(const char *p, size_t n, const char *name)
{
    return strlen(name) == n && strncasecmp(p, name, n) == 0;
}

/* Checks the answer head[0..n) (blank line included) to our upgrade.
 * Returns -1 when it is a valid 101 for key, else the failure kind, with
 * *status set for LG_FAIL_HTTP. */
static int lg_upgrade_check(const char *head, size_t n, const char *key, unsigned *status)
{
    struct proto_json_span kspan = {key, 24}, val;
    const char *p, *end = head + n, *eol, *colon;
    char accept[29];
    int up = 0, conn = 0, acc = 0, ext = 0;

    if (n < 12 || memcmp(head, "HTTP/1.", 7) != 0 || head[8] != ' ' ||
        head[9] < '1' || head[9] > '5' || head[10] < '0' || head[10] > '9' ||
        head[11] < '0' || head[11] > '9')
        return LG_FAIL_HANDSHAKE;
    *status = (unsigned)((head[9] - '0') * 100 + (head[10] - '0') * 10 + (head[11] - '0'));
    if (*status != 101)
        return LG_FAIL_HTTP;
    proto_ws_accept(kspan, accept);
    for (p = (const char *)memchr(head, '\n', n) + 1; p < end; p = eol + 1) {
        eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL || (colon = memchr(p, ':', (size_t)(eol - p))) == NULL)
            break; /* the blank line */
        val.p = colon + 1;
        val.n = (size_t)(eol - val.p);
        while (val.n > 0 && (val.p[0] == ' ' || val.p[0] == '\t')) {
            val.p++;
            val.n--;
        }
        while (val.n > 0 && (val.p[val.n - 1] == '\r' || val.p[val.n - 1] == ' ' ||
                             val.p[val.n - 1] == '\t'))
            val.n--;
        if (lg_name_is(p, (size_t)(colon - p), "upgrade"))
            up = proto_http_has_token(val, "websocket");
        else if (lg_name_is(p, (size_t)(colon - p), "connection"))
            conn = proto_http_has_token(val, "upgrade");
        else if (lg_name_is(p, (size_t)(colon - p), "sec-websocket-accept"))
            acc = val.n == 28 && memcmp(val.p, accept, 28) == 0;
        else if (lg_name_is(p, (size_t)(colon - p), "sec-websocket-extensions") ||
                 lg_name_is(p, (size_t)(colon - p), "sec-websocket-protocol"))
            ext = 1; /* we asked for neither (RFC 6455 4.1) */
    }
    return up && conn && acc && !ext ? -1 : LG_FAIL_HANDSHAKE;
}

/* --tls-resume: c got its 101, so its TLS session is complete (a TLS 1.3
 * server sends its tickets right after the handshake, before any data).
 * The first such session is kept and offered on every later connect, the
 * same ticket each time: nginx's stateless tickets may be used again (RFC
 * 8446 C.4 asks clients not to, for privacy, which a load test does not
 * need). A full handshake in answer to the offer means the server no
 * longer knows it (cache expiry, new ticket keys, tickets it takes once):
 * then this connection's session replaces it. */
static void lg_tls_keep_session(struct lg_conn *c)
{
    SSL_SESSION *sess;

    if (lg_ssl.session != NULL &&
        (!(c->tls->flags & LG_T_OFFERED) || SSL_session_reused(c->tls->ssl)))
        return;
    if ((sess = SSL_get1_session(c->tls->ssl)) == NULL)
        return;
    if (!SSL_SESSION_is_resumable(sess)) { /* no ticket or id: nothing to offer */
        SSL_SESSION_free(sess);
        return;
    }
    SSL_SESSION_free(lg_ssl.session);
    lg_ssl.session = sess;
}

/* Sends {"action":"subscribe","channel":...,"rid":id[,"filter":...]
 * [,"history":N][,"since":{...}]}. */
static int lg_subscribe_send(struct lg_conn *c)
{
    char name[PROTO_CHANNEL_MAX + 1];
    size_t n = lg_channel(c->id, name, sizeof(name));
    const struct lg_since *since = lg_since ? &lg_since[c->id % opt.channels] : NULL;

    proto_buf_reset(&lg_scratch);
    if (proto_buf_append_str(&lg_scratch, "{\"action\":\"subscribe\",\"channel\":") != 0 ||
        proto_json_encode_string(&lg_scratch, name, n) != 0 ||
        proto_buf_printf(&lg_scratch, ",\"rid\":%u", c->id) != 0 ||
        (opt.filter != NULL && proto_buf_printf(&lg_scratch, ",\"filter\":%s", opt.filter) != 0) ||
        (opt.history > 0 && proto_buf_printf(&lg_scratch, ",\"history\":%u", opt.history) != 0) ||
        (since != NULL && since->set &&
         proto_buf_printf(&lg_scratch, ",\"since\":{\"offset\":%llu,\"epoch\":\"%s\"}",
                          (unsigned long long)since->offset, since->epoch) != 0) ||
        proto_buf_append_byte(&lg_scratch, '}') != 0)
        return -1;
    return lg_send_frame(c, 0x1, lg_scratch.data, lg_scratch.len);
}

/* Bytes of the HTTP answer. The head is gathered in c->in; what follows it
 * in this read is already WebSocket. */
static void lg_upgrade_input(struct lg_conn *c, const uint8_t *p, size_t n)
{
    size_t old = c->in.len, from = old >= 3 ? old - 3 : 0, head_len;
    char key[25];
    unsigned status = 0;
    const char *t;
    int kind;
    uint64_t dt;

    if (proto_buf_append(&c->in, p, n) != 0) {
        lg_conn_fail(c, LG_FAIL_IO, ENOMEM, 0);
        return;
    }
    t = memmem(c->in.data + from, c->in.len - from, "\r\n\r\n", 4);
    if (t == NULL) {
        if (c->in.len > LG_HEAD_MAX)
            lg_conn_fail(c, LG_FAIL_HANDSHAKE, 0, 0);
        return;
    }
    /* Earlier reads held no blank line, so the head ends in this read. */
    head_len = (size_t)(t - c->in.data) + 4;
    p += head_len - old;
    n -= head_len - old;
    lg_ws_key(c->id, key);
    kind = lg_upgrade_check(c->in.data, head_len, key, &status);
    proto_buf_free(&c->in);
    if (kind >= 0) {
        lg_conn_fail(c, (enum lg_fail)kind, 0, status);
        return;
    }
    dt = (uint64_t)(lg_clock_us(CLOCK_MONOTONIC) - c->t0);
    lg_hist_record(&res.upgrade, dt);
    if (c->tls != NULL) {
        lg_hist_record(SSL_session_reused(c->tls->ssl) ? &res.upgrade_resumed : &res.upgrade_full, dt);
        if (opt.tls_resume)
            lg_tls_keep_session(c);
    }
    if (opt.query_mode) {
        lg_conn_ready(c, lg_clock_us(CLOCK_MONOTONIC));
    } else {
        c->state = LG_SUBSCRIBING;
        if (lg_subscribe_send(c) != 0) {
            lg_conn_fail(c, LG_FAIL_IO, errno, 0);
            return;
        }
    }
    if (n > 0)
        lg_ws_input(c, p, n);
}

/* Appends s to out with every byte but RFC 3986's unreserved ones as %XX
 * (a comma would split the ?channels= list). */
static int lg_pct_encode(struct proto_buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i;
    int rc = 0;

    for (i = 0; i < n && rc == 0; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
            (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            rc = proto_buf_append_byte(out, (char)ch);
        } else {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            rc = proto_buf_append(out, e, 3);
        }
    }
    return rc;
}

/* Sends the upgrade request; the answer comes on events (LG_UPGRADING). */
static void lg_upgrade_send(struct lg_conn *c)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    char key[25], name[PROTO_CHANNEL_MAX + 1];
    ssize_t w;

    lg_ws_key(c->id, key);
    proto_buf_reset(&lg_out);
    if (proto_buf_printf(&lg_out, "GET %s", opt.target) != 0)
        goto nomem;
    if (opt.query_mode) {
        if (proto_buf_append_str(&lg_out, strchr(opt.target, '?') ? "&channels=" : "?channels=") != 0 ||
            lg_pct_encode(&lg_out, name, lg_channel(c->id, name, sizeof(name))) != 0)
            goto nomem;
    }
    if (proto_buf_printf(&lg_out,
                         " HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                         "Sec-WebSocket-Version: 13\r\nUser-Agent: loadgen\r\n\r\n",
                         opt.hostport, key) != 0)
        goto nomem;
    if (c->tls != NULL) {
        if (lg_tls_write(c, lg_out.data, lg_out.len) != 0 || lg_tls_interest(c) != 0) {
            lg_conn_fail(c, LG_FAIL_IO, errno, 0);
            return;
        }
        c->state = LG_UPGRADING;
        return;
    }
    /* A fresh socket's send buffer takes a few hundred bytes at once. */
    w = send(c->fd, lg_out.data, lg_out.len, MSG_NOSIGNAL);
    if (w != (ssize_t)lg_out.len) {
        lg_conn_fail(c, w < 0 && errno == ECONNREFUSED ? LG_FAIL_REFUSED : LG_FAIL_IO,
                     w < 0 ? errno : 0, 0);
        return;
    }
    if (epoll_ctl(lg.ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        lg_conn_fail(c, LG_FAIL_IO, errno, 0);
        return;
    }
    c->state = LG_UPGRADING;
    return;
nomem:
    lg_conn_fail(c, LG_FAIL_IO, ENOMEM, 0);
}

/* One recvmsg() into buf; when it returns data, lg.rx_real gets the
 * kernel's receive time of the last segment read (SO_TIMESTAMP), or 0. */
static ssize_t lg_recv(int fd, void *buf, size_t cap)
{
    union {
        char buf[CMSG_SPACE(sizeof(struct timeval))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {buf, cap};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
    struct cmsghdr *cm;
    ssize_t n = recvmsg(fd, &mh, 0);

    if (n <= 0)
        return n;
    lg.rx_real = 0;
    for (cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMP &&
            cm->cmsg_len >= CMSG_LEN(sizeof(struct timeval))) {
            struct timeval tv;
            memcpy(&tv, CMSG_DATA(cm), sizeof(tv));
            lg.rx_real = (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
        }
    }
    return n;
}

/* n application bytes from the broker, whichever way they came. */
static void lg_stream_input(struct lg_conn *c, const uint8_t *p, size_t n)
{
    res.bytes += (uint64_t)n;
    if (c->state == LG_UPGRADING)
        lg_upgrade_input(c, p, n);
    else
        lg_ws_input(c, p, n);
}

/* A ws:// socket is readable: one read, straight into the parsers. */
static void lg_on_readable(struct lg_conn *c)
{
    ssize_t n = lg_recv(c->fd, lg_rbuf, sizeof(lg_rbuf));

    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        if (c->state == LG_OPEN && errno != ECONNRESET)
            res.err_io++;
        lg_conn_lost(c, errno == ECONNREFUSED ? LG_FAIL_REFUSED : LG_FAIL_CLOSED, errno);
        return;
    }
    if (n == 0) {
        lg_conn_lost(c, LG_FAIL_CLOSED, 0);
        return;
    }
    res.wire_bytes += (uint64_t)n;
    lg_stream_input(c, lg_rbuf, (size_t)n);
}

/* ---------------------------------------------------------------------- */
/* TLS: the socket BIO, the handshake and reads */

/* The BIO under every SSL, instead of OpenSSL's socket BIO: reads with
 * recvmsg() so that latency still ends at the kernel's receive time
 * (lg_recv()), writes with MSG_NOSIGNAL (a socket BIO write()s, and a peer
 * gone would raise SIGPIPE), and counts the bytes on the wire. Its data is
 * the socket, which the connection owns. */
static int lg_bio_read(BIO *b, char *buf, int len)
{
    ssize_t n;

    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    n = lg_recv((int)(intptr_t)BIO_get_data(b), buf, (size_t)len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        BIO_set_retry_read(b);
    if (n > 0)
        res.wire_bytes += (uint64_t)n;
    return (int)n;
}

static int lg_bio_write(BIO *b, const char *buf, int len)
{
    ssize_t n;

    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    n = send((int)(intptr_t)BIO_get_data(b), buf, (size_t)len, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        BIO_set_retry_write(b);
    return (int)n;
}

static long lg_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b; /* the socket needs no control: writes go out at once */
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

/* A handshake, read or write on t failed (SSL_get_error() code e, err the
 * errno right after the call): which failure kind that is, and why, in a
 * line for the summary. Empties OpenSSL's error queue, which must be empty
 * before the next call on any connection. */
static enum lg_fail lg_tls_failure(struct lg_tls *t, int e, int err, char *why, size_t cap)
{
    unsigned long code = ERR_peek_error();
    const char *reason = ERR_reason_error_string(code);
    enum lg_fail kind = LG_FAIL_TLS;
    long v;

    t->flags |= LG_T_FATAL;
    if (e == SSL_ERROR_SSL && ERR_GET_LIB(code) == ERR_LIB_SSL &&
        ERR_GET_REASON(code) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        v = SSL_get_verify_result(t->ssl);
        snprintf(why, cap, "certificate verify failed: %s (X509 error %ld)",
                 X509_verify_cert_error_string(v), v);
        kind = LG_FAIL_TLS_VERIFY;
    } else if (e == SSL_ERROR_SSL && ERR_GET_LIB(code) == ERR_LIB_SSL &&
               ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        snprintf(why, cap, "connection closed during TLS");
        kind = LG_FAIL_CLOSED;
    } else if (e == SSL_ERROR_SSL) {
        snprintf(why, cap, "TLS: %s", reason != NULL ? reason : "error without a reason");
    } else if (e == SSL_ERROR_ZERO_RETURN) {
        snprintf(why, cap, "TLS close_notify");
        kind = LG_FAIL_CLOSED;
    } else if (e == SSL_ERROR_SYSCALL) {
        snprintf(why, cap, "%s", err != 0 ? strerror(err) : "connection closed during TLS");
        kind = err == ECONNREFUSED ? LG_FAIL_REFUSED : LG_FAIL_CLOSED;
    } else {
        snprintf(why, cap, "TLS: SSL_get_error %d", e);
    }
    ERR_clear_error();
    return kind;
}

/* Reads what TLS has for c and passes it on, until OpenSSL holds nothing
 * more: bytes still in the socket make epoll (level-triggered) call again,
 * bytes OpenSSL has read ahead would not. */
static void lg_tls_read(struct lg_conn *c)
{
    struct lg_tls *t;
    char why[LG_WHY_MAX];
    enum lg_fail kind;
    int r, e, err;

    for (;;) {
        t = c->tls;
        r = SSL_read(t->ssl, lg_rbuf, (int)sizeof(lg_rbuf));
        if (r > 0) {
            t->flags &= (uint8_t)~LG_T_RD_OUT;
            lg_stream_input(c, lg_rbuf, (size_t)r);
            if (c->state == LG_DONE)
                return;
            if (SSL_has_pending(c->tls->ssl))
                continue;
            break;
        }
        err = errno;
        e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            /* A read may need a write (TLS 1.3 key update, a 1.2
             * renegotiation): then the socket must be writable first. */
            if (e == SSL_ERROR_WANT_WRITE)
                t->flags |= LG_T_RD_OUT;
            else
                t->flags &= (uint8_t)~LG_T_RD_OUT;
            break;
        }
        kind = lg_tls_failure(t, e, err, why, sizeof(why));
        if (c->state == LG_OPEN) {
            if (kind == LG_FAIL_TLS)
                res.err_tls++;
            else if (e == SSL_ERROR_SYSCALL && err != 0 && err != ECONNRESET)
                res.err_io++;
            lg_conn_closed(c, 1006);
        } else {
            lg_conn_fail_why(c, kind, why);
        }
        return;
    }
    if (lg_tls_interest(c) != 0)
        lg_conn_lost(c, LG_FAIL_IO, errno);
}

/* Drives c's TLS handshake (LG_TLS). Once it is done, counts it as full
 * or resumed and sends the upgrade request over it. */
static void lg_tls_handshake(struct lg_conn *c)
{
    struct lg_tls *t = c->tls;
    char why[LG_WHY_MAX];
    uint64_t dt;
    int r = SSL_do_handshake(t->ssl), e, err = errno;

    if (r != 1) {
        e = SSL_get_error(t->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (e == SSL_ERROR_WANT_WRITE)
                t->flags |= LG_T_RD_OUT;
            else
                t->flags &= (uint8_t)~LG_T_RD_OUT;
            if (lg_tls_interest(c) != 0)
                lg_conn_fail(c, LG_FAIL_IO, errno, 0);
            return;
        }
        lg_conn_fail_why(c, lg_tls_failure(t, e, err, why, sizeof(why)), why);
        return;
    }
    t->flags &= (uint8_t)~LG_T_RD_OUT;
    dt = (uint64_t)(lg_clock_us(CLOCK_MONOTONIC) - c->t0);
    lg_hist_record(SSL_session_reused(t->ssl) ? &res.tls_resumed : &res.tls_full, dt);
    if (res.tls_negotiated[0] == '\0')
        snprintf(res.tls_negotiated, sizeof(res.tls_negotiated), "%s %s",
                 SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl));
    lg_upgrade_send(c);
    if (c->state == LG_UPGRADING && SSL_has_pending(c->tls->ssl))
        lg_tls_read(c);
}

/* An event on an upgraded (or upgrading) wss:// connection: first the
 * blocked write, if any (what it waited for may have come), then reads. */
static void lg_tls_on_event(struct lg_conn *c)
{
    lg.rx_real = 0;
    if (c->tls->out.len > 0 && lg_tls_flush(c) != 0) {
        lg_conn_lost(c, LG_FAIL_IO, errno);
        return;
    }
    lg_tls_read(c);
}

/* TCP is up: puts an SSL object on c's socket and starts the handshake. */
static void lg_tls_start(struct lg_conn *c)
{
    char why[LG_WHY_MAX];
    struct lg_tls *t;
    BIO *bio;

    if ((t = calloc(1, sizeof(*t))) == NULL) {
        lg_conn_fail(c, LG_FAIL_IO, ENOMEM, 0);
        return;
    }
    c->tls = t;
    t->flags = LG_T_EPOLLOUT; /* as lg_conn_start() registered the socket */
    c->state = LG_TLS;
    if ((t->ssl = SSL_new(lg_ssl.ctx)) == NULL || (bio = BIO_new(lg_ssl.bio)) == NULL)
        goto fail;
    BIO_set_data(bio, (void *)(intptr_t)c->fd);
    BIO_set_init(bio, 1);
    SSL_set_bio(t->ssl, bio, bio); /* the SSL owns it now */
    if (!opt.host_is_ip && SSL_set_tlsext_host_name(t->ssl, opt.host) != 1)
        goto fail;
    if (opt.tls_resume && lg_ssl.session != NULL) {
        /* OpenSSL marks a session not resumable after a fatal alert on a
         * connection that used it: stop offering it, keep the next one
         * (lg_tls_keep_session()). */
        if (!SSL_SESSION_is_resumable(lg_ssl.session)) {
            SSL_SESSION_free(lg_ssl.session);
            lg_ssl.session = NULL;
        } else {
            if (SSL_set_session(t->ssl, lg_ssl.session) != 1)
                goto fail;
            t->flags |= LG_T_OFFERED;
            res.tls_offered++;
        }
    }
    SSL_set_connect_state(t->ssl);
    lg_tls_handshake(c);
    return;
fail:
    lg_conn_fail_why(c, lg_tls_failure(t, SSL_ERROR_SSL, 0, why, sizeof(why)), why);
}

/* connect() finished: TLS first for wss://, else the upgrade request. */
static void lg_on_connected(struct lg_conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err != 0) {
        lg_conn_fail(c, err == ECONNREFUSED ? LG_FAIL_REFUSED :
                        err == ETIMEDOUT ? LG_FAIL_TIMEOUT : LG_FAIL_CONNECT, err, 0);
        return;
    }
    lg_hist_record(&res.tcp, (uint64_t)(lg_clock_us(CLOCK_MONOTONIC) - c->t0));
    if (opt.tls)
        lg_tls_start(c);
    else
        lg_upgrade_send(c);
}

/* Opens connection c: socket, optional source address, non-blocking
 * connect(); the rest happens on events. */
static void lg_conn_start(struct lg_conn *c, int64_t now)
{
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    int fd, one = 1, r;

    c->t0 = now;
    c->state = LG_CONNECTING;
    c->fd = -1;
    c->nmsg = c->id % opt.sample; /* spread the sampled frames over time */
    c->prev = lg.fl_tail;
    c->next = NULL;
    if (lg.fl_tail)
        lg.fl_tail->next = c;
    else
        lg.fl_head = c;
    lg.fl_tail = c;
    lg.inflight++;

    fd = socket(opt.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        lg_conn_fail(c, LG_FAIL_CONNECT, errno, 0);
        return;
    }
    c->fd = fd;
    /* Pongs and closes are tiny: do not let Nagle hold them. */
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
        goto fail;
    /* Kernel receive times for the latency samples (lg_on_readable). */
    if (!opt.idle && setsockopt(fd, SOL_SOCKET, SO_TIMESTAMP, &one, sizeof(one)) != 0)
        goto fail;
    if (opt.source_ips > 1) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7F000001u + c->id % opt.source_ips);
        /* Without it, bind() picks the port alone and each source address
         * still shares one ephemeral range with every destination. */
        if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one)) != 0 ||
            bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0)
            goto fail;
    }
    r = connect(fd, (struct sockaddr *)&opt.addr, opt.addrlen);
    if (r != 0 && errno != EINPROGRESS)
        goto fail;
    if (epoll_ctl(lg.ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        goto fail;
    return;
fail:
    lg_conn_fail(c, errno == ECONNREFUSED ? LG_FAIL_REFUSED : LG_FAIL_CONNECT, errno, 0);
}

static void lg_on_event(struct lg_conn *c, uint32_t events)
{
    switch (c->state) {
    case LG_CONNECTING:
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            lg_on_connected(c);
        break;
    case LG_TLS:
        lg_tls_handshake(c);
        break;
    case LG_UPGRADING: case LG_SUBSCRIBING: case LG_OPEN:
        if (c->tls != NULL)
            lg_tls_on_event(c);
        else
            lg_on_readable(c);
        break;
    default: /* ended earlier in this batch of events */
        break;
    }
}

/* ---------------------------------------------------------------------- */
/* The loop */

static void lg_report(int64_t now)
{
    double dt = (double)(now - lg.last.t) / 1e6;
    uint64_t errors = res.failed + res.err_protocol + res.err_io + res.bad_frames;
    char lat[128];

    if (dt <= 0)
        dt = 1e-6;
    if (lg.lat_iv.count > 0)
        snprintf(lat, sizeof(lat), "lat_p50=%.1fms lat_p99=%.1fms lag_p99=%.1fms",
                 (double)lg_hist_quantile(&lg.lat_iv, 0.5) / 1000.0,
                 (double)lg_hist_quantile(&lg.lat_iv, 0.99) / 1000.0,
                 (double)lg_hist_quantile(&lg.lag_iv, 0.99) / 1000.0);
    else
        snprintf(lat, sizeof(lat), "lat_p50=- lat_p99=-");
    fprintf(stderr,
            "t=%.0fs conns=%u frames/s=%.0f msgs/s=%.0f bytes/s=%.0f %s closed=%llu errors=%llu",
            (double)(now - lg.start) / 1e6, lg.open,
            (double)(res.frames - lg.last.frames) / dt,
            (double)(res.messages - lg.last.messages) / dt,
            (double)(res.bytes - lg.last.bytes) / dt, lat,
            (unsigned long long)res.closed, (unsigned long long)errors);
    if (!lg.ramp_done)
        fprintf(stderr, " connecting=%u", lg.inflight + (opt.connections - lg.next));
    fputc('\n', stderr);
    lg.last.t = now;
    lg.last.frames = res.frames;
    lg.last.messages = res.messages;
    lg.last.bytes = res.bytes;
    memset(&lg.lat_iv, 0, sizeof(lg.lat_iv));
    memset(&lg.lag_iv, 0, sizeof(lg.lag_iv));
}

/* Starts connections while fewer than --concurrency handshakes are in
 * flight. */
static void lg_start_more(int64_t now)
{
    while (lg.next < opt.connections && lg.inflight < opt.concurrency) {
        if (lg.next == 0)
            lg.first_connect = now;
        lg_conn_start(&lg.conns[lg.next], now);
        lg.next++;
    }
}

/* Fails the handshakes older than --timeout; the list is oldest first. */
static void lg_expire(int64_t now)
{
    int64_t limit = (int64_t)(opt.timeout * 1e6);

    while (lg.fl_head != NULL && now - lg.fl_head->t0 >= limit)
        lg_conn_fail(lg.fl_head, LG_FAIL_TIMEOUT, 0, 0);
}

/* This process's resident set in KiB (/proc/self/statm), 0 when unknown.
 * Only growth is reported: what the connections cost. */
static uint64_t lg_rss_kib(void)
{
    unsigned long long size, pages;
    long page = sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/self/statm", "r");
    int ok;

    if (f == NULL)
        return 0;
    ok = fscanf(f, "%llu %llu", &size, &pages) == 2;
    if (fclose(f) != 0)
        ok = 0;
    return ok && page > 0 ? (uint64_t)pages * (uint64_t)page / 1024 : 0;
}

static void lg_on_signal(int sig)
{
    (void)sig;
    lg_stop = 1;
}

/* Runs until --duration after the ramp, SIGINT/SIGTERM, or no connection
 * left; then fills res. Returns 0, or -1 when the loop itself failed. */
static int lg_run(void)
{
    static struct epoll_event evs[LG_EVENTS];
    int64_t now, interval = (int64_t)(opt.interval * 1e6), next_report;
    int n, i, rc = 0;
    uint32_t k;
    double window;

    res.rss_before_kib = lg_rss_kib();
    lg.start = lg.last.t = now = lg_clock_us(CLOCK_MONOTONIC);
    next_report = now + interval;
    for (;;) {
        lg_start_more(now);
        n = epoll_wait(lg.ep, evs, LG_EVENTS, lg.ramp_done ? 100 : 10);
        if (n < 0 && errno != EINTR) {
            perror("loadgen: epoll_wait");
            rc = -1;
            break;
        }
        for (i = 0; i < n; i++)
            lg_on_event(evs[i].data.ptr, evs[i].events);
        now = lg_clock_us(CLOCK_MONOTONIC);
        lg_expire(now);
        if (!lg.ramp_done && lg.next == opt.connections && lg.inflight == 0) {
            lg.ramp_done = 1;
            lg.measure_start = now;
            res.connect_s = (double)(now - lg.first_connect) / 1e6;
            lg.at_measure.frames = res.frames;
            lg.at_measure.messages = res.messages;
            lg.at_measure.bytes = res.bytes;
            lg.at_measure.wire_bytes = res.wire_bytes;
            res.rss_ready_kib = lg_rss_kib();
            if (!opt.quiet && opt.tls)
                fprintf(stderr, "loadgen: %llu of %u connections ready in %.3fs (%llu failed; "
                                "TLS handshakes: %llu full, %llu resumed)\n",
                        (unsigned long long)res.opened, opt.connections, res.connect_s,
                        (unsigned long long)res.failed, (unsigned long long)res.tls_full.count,
                        (unsigned long long)res.tls_resumed.count);
            else if (!opt.quiet)
                fprintf(stderr, "loadgen: %llu of %u connections ready in %.3fs (%llu failed)\n",
                        (unsigned long long)res.opened, opt.connections, res.connect_s,
                        (unsigned long long)res.failed);
        }
        if (now >= next_report) {
            if (!opt.quiet)
                lg_report(now);
            next_report += interval;
            if (next_report <= now)
                next_report = now + interval;
        }
        if (lg_stop)
            break;
        if (lg.ramp_done && (lg.open == 0 ||
                             (opt.duration > 0 && now - lg.measure_start >= (int64_t)(opt.duration * 1e6))))
            break;
    }

    res.elapsed_s = (double)(now - lg.start) / 1e6;
    if (!lg.ramp_done) { /* interrupted while connecting: rate over the whole run */
        lg.measure_start = lg.start;
        memset(&lg.at_measure, 0, sizeof(lg.at_measure));
        res.connect_s = (double)(now - lg.first_connect) / 1e6;
    }
    window = (double)(now - lg.measure_start) / 1e6;
    res.measure_s = window;
    if (window > 0) {
        res.frames_ps = (double)(res.frames - lg.at_measure.frames) / window;
        res.messages_ps = (double)(res.messages - lg.at_measure.messages) / window;
        res.bytes_ps = (double)(res.bytes - lg.at_measure.bytes) / window;
        res.wire_bytes_ps = (double)(res.wire_bytes - lg.at_measure.wire_bytes) / window;
    }
    res.rss_end_kib = lg_rss_kib();
    if (!lg.ramp_done)
        res.rss_ready_kib = res.rss_end_kib;
    res.open_at_end = lg.open;
    res.target = opt.connections;
    /* Leave politely: a close frame (1000) and the socket closed. */
    for (k = 0; k < opt.connections; k++) {
        struct lg_conn *c = &lg.conns[k];
        static const uint8_t bye[2] = {0x03, 0xE8};
        if (c->state == LG_OPEN && lg_send_frame(c, 0x8, bye, 2) != 0)
            res.err_io++;
        if (c->state != LG_NEW && c->state != LG_DONE)
            lg_conn_release(c);
    }
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Setup */

static void lg_usage(FILE *f)
{
    fprintf(f,
"usage: loadgen --url ws[s]://HOST:PORT/PATH [options]\n"
"       loadgen --merge FILE... [--json OUT]\n"
"\n"
"Opens N WebSocket connections to the broker, subscribes each to one channel,\n"
"and measures what arrives: frames, messages and bytes per second, and the\n"
"latency from each message's \"ts\" (publish time, us since the epoch) to\n"
"its receipt by the kernel (lag_p99: receipt to parse, loadgen's own delay).\n"
"Prints a line every --interval seconds on stderr and a JSON summary at the\n"
"end (stdout, or --json FILE). Details: scripts/TOOLS.md.\n"
"\n"
"  --url URL              ws://HOST[:PORT]/PATH[?QUERY] or wss://... (TLS)\n"
"                         (required)\n"
"  -n, --connections N    connections to open (default 1)\n"
"  -c, --concurrency C    handshakes in flight at most (default 100)\n"
"  -k, --channels K       client i subscribes to PREFIX<i %% K> (default 1)\n"
"      --prefix P         channel name prefix (default \"ch\")\n"
"      --subscribe-mode M frame: send {\"action\":\"subscribe\",...} and wait\n"
"                         for the ack (default); query: ?channels= in the URL\n"
"      --filter JSON      add \"filter\":JSON to the subscribe message\n"
"      --duration S       run S seconds after every connection is up;\n"
"                         0 = until SIGINT/SIGTERM (default 0)\n"
"      --interval S       report interval (default 5)\n"
"      --sample N         parse every Nth batch frame of a connection for\n"
"                         latency; the others are only counted (default 1)\n"
"      --source-ips N     bind connection i to 127.0.0.(1 + i %% N), so more\n"
"                         than one ephemeral port range fits (default 1)\n"
"      --timeout S        a connection not ready by then fails (default 10)\n"
"      --json FILE        write the summary to FILE instead of stdout\n"
"  -q, --quiet            no periodic lines\n"
"      --idle             hold connections only: no message counting or\n"
"                         latency (frames, pings and closes are still handled)\n"
"      --merge FILE...    add up summaries written by several loadgen runs\n"
"\n"
"History and resume (PROTOCOL.md section 7; frame mode):\n"
"      --since FILE       subscribe with \"since\": lines \"CHANNEL OFFSET EPOCH\"\n"
"                         (a channel without a line subscribes plainly); the\n"
"                         acks' \"recovered\" are counted\n"
"      --history N        subscribe with \"history\":N\n"
"      --expect N         time each connection's N-th message (connect() to\n"
"                         it: resume.complete; the last one: all_complete_s)\n"
"\n"
"TLS (wss:// only; the certificate is checked against the system's trust\n"
"store and HOST by default, and SNI is HOST unless HOST is an IP address):\n"
"      --ca FILE          trust only the certificates in FILE (PEM: a CA, or\n"
"                         the server's own self-signed certificate)\n"
"      --insecure         do not check the server's certificate\n"
"      --tls-resume       keep the TLS session of the first connection to get\n"
"                         its 101 and offer it on every later connect (the\n"
"                         summary counts full and resumed handshakes)\n"
"      --tls-version V    1.2 or 1.3 only (default: either)\n"
"  -h, --help             this text\n"
"\n"
"Received bytes are application bytes (decrypted over TLS); what came over\n"
"the wire, TLS records included, is received.wire_bytes in the summary.\n"
"\n"
"Exit status: 0, 1 on a usage or setup error, 2 when some connection could\n"
"not be established.\n");
}

static int lg_parse_u32(const char *s, const char *what, uint32_t min, uint32_t max,
                        uint32_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max) {
        fprintf(stderr, "loadgen: %s must be an integer from %u to %u, not \"%s\"\n",
                what, min, max, s);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int lg_parse_secs(const char *s, const char *what, double min, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= min) || v > 1e9) {
        fprintf(stderr, "loadgen: %s must be a number of seconds >= %g, not \"%s\"\n",
                what, min, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Splits ws[s]://HOST[:PORT][/PATH][?QUERY] and resolves HOST. */
static int lg_parse_url(const char *url)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    const char *auth, *rest, *port = "80";
    char host[256], portbuf[8];
    unsigned char ip[sizeof(struct in6_addr)];
    size_t alen, hlen;
    const char *colon;
    int r;

    if (strncasecmp(url, "ws://", 5) == 0) {
        auth = url + 5;
    } else if (strncasecmp(url, "wss://", 6) == 0) {
        auth = url + 6;
        port = "443";
        opt.tls = 1;
    } else {
        fprintf(stderr, "loadgen: --url must start with ws:// or wss://\n");
        return -1;
    }
    alen = strcspn(auth, "/?");
    rest = auth + alen;
    if (alen == 0 || alen >= sizeof(host)) {
        fprintf(stderr, "loadgen: --url has no usable host\n");
        return -1;
    }
    if (auth[0] == '[') {
        const char *rb = memchr(auth, ']', alen);
        if (rb == NULL)
            goto bad;
        hlen = (size_t)(rb - auth - 1);
        memcpy(host, auth + 1, hlen);
        colon = rb + 1 < auth + alen && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(auth, ':', alen);
        hlen = colon ? (size_t)(colon - auth) : alen;
        memcpy(host, auth, hlen);
    }
    host[hlen] = '\0';
    if ((opt.host = strdup(host)) == NULL)
        return -1;
    opt.host_is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    if (colon != NULL) {
        size_t plen = (size_t)(auth + alen - colon - 1);
        if (plen == 0 || plen >= sizeof(portbuf))
            goto bad;
        memcpy(portbuf, colon + 1, plen);
        portbuf[plen] = '\0';
        port = portbuf;
    }
    if ((opt.hostport = strndup(auth, alen)) == NULL)
        return -1;
    if (*rest == '\0')
        opt.target = strdup("/");
    else if (*rest == '?' && asprintf(&opt.target, "/%s", rest) < 0)
        opt.target = NULL;
    else if (*rest == '/')
        opt.target = strdup(rest);
    if (opt.target == NULL)
        return -1;
    if ((r = getaddrinfo(host, port, &hints, &ai)) != 0) {
        fprintf(stderr, "loadgen: %s:%s: %s\n", host, port, gai_strerror(r));
        return -1;
    }
    memcpy(&opt.addr, ai->ai_addr, ai->ai_addrlen);
    opt.addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
bad:
    fprintf(stderr, "loadgen: cannot parse --url %s\n", url);
    return -1;
}

/* Makes room for N sockets: raises the soft RLIMIT_NOFILE to the hard one. */
static int lg_fd_limit(void)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)opt.connections + 32;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        perror("loadgen: getrlimit");
        return -1;
    }
    if (rl.rlim_cur < need && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            perror("loadgen: setrlimit");
            return -1;
        }
    }
    if (rl.rlim_cur < need) {
        fprintf(stderr,
                "loadgen: %u connections need %llu open files, the limit is %llu: split them "
                "over several loadgen processes and combine with --merge\n",
                opt.connections, (unsigned long long)need, (unsigned long long)rl.rlim_cur);
        return -1;
    }
    return 0;
}

static json_t *lg_config_json(void)
{
    return json_pack("{ss sI sI sI ss ss ss* sf sf sI sI sf sb sb ss* sb sb ss* ss* sI sI}",
                     "url", opt.url,
                     "connections", LG_JI(opt.connections),
                     "concurrency", LG_JI(opt.concurrency),
                     "channels", LG_JI(opt.channels),
                     "prefix", opt.prefix,
                     "subscribe_mode", opt.query_mode ? "query" : "frame",
                     "filter", opt.filter,
                     "duration_s", opt.duration,
                     "interval_s", opt.interval,
                     "sample", LG_JI(opt.sample),
                     "source_ips", LG_JI(opt.source_ips),
                     "timeout_s", opt.timeout,
                     "idle", opt.idle,
                     "tls", opt.tls,
                     "tls_ca", opt.ca,
                     "tls_verify", opt.tls && !opt.insecure,
                     "tls_resume", opt.tls_resume,
                     "tls_version", opt.tls_version,
                     "since", opt.since_path,
                     "history", LG_JI(opt.history),
                     "expect", LG_JI(opt.expect));
}

/* Prints OpenSSL's reason for what failed, after "loadgen: what: ". */
static void lg_tls_perror(const char *what)
{
    const char *reason = ERR_reason_error_string(ERR_peek_last_error());

    fprintf(stderr, "loadgen: %s: %s\n", what, reason != NULL ? reason : "OpenSSL error");
    ERR_clear_error();
}

/* The TLS client context every wss:// connection is made from, and the BIO
 * method under them. Returns 0, or -1 with the reason printed; what was
 * made is freed by lg_tls_cleanup(). */
static int lg_tls_setup(void)
{
    int version = opt.tls_version == NULL ? 0 :
                  strcmp(opt.tls_version, "1.2") == 0 ? TLS1_2_VERSION : TLS1_3_VERSION;
    X509_VERIFY_PARAM *vp;
    SSL_CTX *ctx;
    int index = BIO_get_new_index();

    if (index == -1 ||
        (lg_ssl.bio = BIO_meth_new(index | BIO_TYPE_SOURCE_SINK, "loadgen socket")) == NULL ||
        BIO_meth_set_read(lg_ssl.bio, lg_bio_read) != 1 ||
        BIO_meth_set_write(lg_ssl.bio, lg_bio_write) != 1 ||
        BIO_meth_set_ctrl(lg_ssl.bio, lg_bio_ctrl) != 1) {
        lg_tls_perror("BIO method");
        return -1;
    }
    if ((ctx = lg_ssl.ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
        lg_tls_perror("SSL_CTX_new");
        return -1;
    }
    /* TLS 1.2 and 1.3, as docker/nginx.conf offers. */
    if (SSL_CTX_set_min_proto_version(ctx, version ? version : TLS1_2_VERSION) != 1 ||
        (version != 0 && SSL_CTX_set_max_proto_version(ctx, version) != 1)) {
        lg_tls_perror("--tls-version");
        return -1;
    }
    /* Idle connections give their record buffers back; a write that must
     * wait is retried from a copy of ours (lg_tls_write()); reads take
     * whatever the socket has, not one record header at a time. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(ctx, 1);
    if (opt.insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        vp = SSL_CTX_get0_param(ctx);
        if (opt.ca != NULL) {
            if (SSL_CTX_load_verify_locations(ctx, opt.ca, NULL) != 1) {
                /* OpenSSL says "system lib" for a missing file: say which. */
                if (access(opt.ca, R_OK) != 0) {
                    fprintf(stderr, "loadgen: --ca %s: %s\n", opt.ca, strerror(errno));
                    ERR_clear_error();
                } else {
                    lg_tls_perror("--ca: no PEM certificate could be loaded");
                }
                return -1;
            }
            /* A certificate given is trusted as it is, CA or not (the
             * stack's own is self-signed and no CA). */
            if (X509_VERIFY_PARAM_set_flags(vp, X509_V_FLAG_PARTIAL_CHAIN) != 1) {
                lg_tls_perror("X509_VERIFY_PARAM_set_flags");
                return -1;
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            lg_tls_perror("the system trust store");
            return -1;
        }
        /* The name checked is the URL's host: an IP address must be among
         * the certificate's IP SANs, a name among its DNS names. */
        if ((opt.host_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, opt.host)
                            : X509_VERIFY_PARAM_set1_host(vp, opt.host, 0)) != 1) {
            lg_tls_perror("host for the certificate check");
            return -1;
        }
    }
    /* No client session cache (OpenSSL's default for clients), on purpose:
     * with it on, OpenSSL marks a TLS 1.3 session not resumable once a
     * handshake used it, so the one session --tls-resume keeps would
     * resume one connection only (lg_tls_keep_session()). */
    return 0;
}

static void lg_tls_cleanup(void)
{
    SSL_SESSION_free(lg_ssl.session);
    lg_ssl.session = NULL;
    SSL_CTX_free(lg_ssl.ctx);
    lg_ssl.ctx = NULL;
    BIO_meth_free(lg_ssl.bio);
    lg_ssl.bio = NULL;
}

/* --merge: adds up the summaries in files[0..n) and writes the total. */
static int lg_merge(char **files, int n)
{
    struct lg_result *total = calloc(1, sizeof(*total)), *one = calloc(1, sizeof(*one));
    json_error_t jerr;
    const char *why;
    json_t *root;
    int i, rc = 1;

    if (total == NULL || one == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        goto done;
    }
    for (i = 0; i < n; i++) {
        root = json_load_file(files[i], 0, &jerr);
        if (root == NULL) {
            fprintf(stderr, "loadgen: %s:%d: %s\n", files[i], jerr.line, jerr.text);
            goto done;
        }
        memset(one, 0, sizeof(*one));
        if (lg_result_load(root, one, &why) != 0) {
            fprintf(stderr, "loadgen: %s: %s\n", files[i], why);
            json_decref(one->config);
            json_decref(root);
            goto done;
        }
        json_decref(root);
        lg_result_add(total, one);
        if (total->config == NULL)
            total->config = json_incref(one->config); /* the first file's */
        json_decref(one->config);
    }
    rc = lg_result_write(total, opt.json_path) == 0 ? 0 : 1;
done:
    if (total != NULL)
        json_decref(total->config);
    free(total);
    free(one);
    return rc;
}

int main(int argc, char **argv)
{
    enum { O_PREFIX = 256, O_MODE, O_FILTER, O_DURATION, O_INTERVAL, O_SAMPLE,
           O_SOURCE_IPS, O_TIMEOUT, O_JSON, O_IDLE, O_MERGE, O_URL, O_CA, O_INSECURE,
           O_TLS_RESUME, O_TLS_VERSION, O_SINCE, O_HISTORY, O_EXPECT };
    static const struct option longopts[] = {
        {"url", required_argument, NULL, O_URL},
        {"connections", required_argument, NULL, 'n'},
        {"concurrency", required_argument, NULL, 'c'},
        {"channels", required_argument, NULL, 'k'},
        {"prefix", required_argument, NULL, O_PREFIX},
        {"subscribe-mode", required_argument, NULL, O_MODE},
        {"filter", required_argument, NULL, O_FILTER},
        {"duration", required_argument, NULL, O_DURATION},
        {"interval", required_argument, NULL, O_INTERVAL},
        {"sample", required_argument, NULL, O_SAMPLE},
        {"source-ips", required_argument, NULL, O_SOURCE_IPS},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"json", required_argument, NULL, O_JSON},
        {"quiet", no_argument, NULL, 'q'},
        {"idle", no_argument, NULL, O_IDLE},
        {"merge", no_argument, NULL, O_MERGE},
        {"ca", required_argument, NULL, O_CA},
        {"insecure", no_argument, NULL, O_INSECURE},
        {"tls-resume", no_argument, NULL, O_TLS_RESUME},
        {"tls-version", required_argument, NULL, O_TLS_VERSION},
        {"since", required_argument, NULL, O_SINCE},
        {"history", required_argument, NULL, O_HISTORY},
        {"expect", required_argument, NULL, O_EXPECT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    struct sigaction sa;
    char longest[PROTO_CHANNEL_MAX + 2];
    int ch, merge = 0, rc = 1;
    uint32_t i;
    size_t len;

    while ((ch = getopt_long(argc, argv, "n:c:k:qh", longopts, NULL)) != -1) {
        switch (ch) {
        case O_URL: opt.url = optarg; break;
        case 'n':
            if (lg_parse_u32(optarg, "--connections", 1, 10000000, &opt.connections) != 0)
                return 1;
            break;
        case 'c':
            if (lg_parse_u32(optarg, "--concurrency", 1, 1000000, &opt.concurrency) != 0)
                return 1;
            break;
        case 'k':
            if (lg_parse_u32(optarg, "--channels", 1, 100000000, &opt.channels) != 0)
                return 1;
            break;
        case O_PREFIX: opt.prefix = optarg; break;
        case O_MODE:
            if (strcmp(optarg, "frame") == 0) {
                opt.query_mode = 0;
            } else if (strcmp(optarg, "query") == 0) {
                opt.query_mode = 1;
            } else {
                fprintf(stderr, "loadgen: --subscribe-mode is frame or query\n");
                return 1;
            }
            break;
        case O_FILTER: opt.filter = optarg; break;
        case O_SINCE: opt.since_path = optarg; break;
        case O_HISTORY:
            if (lg_parse_u32(optarg, "--history", 1, 1000000, &opt.history) != 0)
                return 1;
            break;
        case O_EXPECT:
            if (lg_parse_u32(optarg, "--expect", 1, 1000000000, &opt.expect) != 0)
                return 1;
            break;
        case O_DURATION:
            if (lg_parse_secs(optarg, "--duration", 0, &opt.duration) != 0)
                return 1;
            break;
        case O_INTERVAL:
            if (lg_parse_secs(optarg, "--interval", 0.01, &opt.interval) != 0)
                return 1;
            break;
        case O_SAMPLE:
            if (lg_parse_u32(optarg, "--sample", 1, 1000000000, &opt.sample) != 0)
                return 1;
            break;
        case O_SOURCE_IPS:
            if (lg_parse_u32(optarg, "--source-ips", 1, 254, &opt.source_ips) != 0)
                return 1;
            break;
        case O_TIMEOUT:
            if (lg_parse_secs(optarg, "--timeout", 0.001, &opt.timeout) != 0)
                return 1;
            break;
        case O_JSON: opt.json_path = optarg; break;
        case 'q': opt.quiet = 1; break;
        case O_IDLE: opt.idle = 1; break;
        case O_MERGE: merge = 1; break;
        case O_CA: opt.ca = optarg; break;
        case O_INSECURE: opt.insecure = 1; break;
        case O_TLS_RESUME: opt.tls_resume = 1; break;
        case O_TLS_VERSION:
            if (strcmp(optarg, "1.2") != 0 && strcmp(optarg, "1.3") != 0) {
                fprintf(stderr, "loadgen: --tls-version is 1.2 or 1.3\n");
                return 1;
            }
            opt.tls_version = optarg;
            break;
        case 'h': lg_usage(stdout); return 0;
        default: lg_usage(stderr); return 1;
        }
    }
    if (merge) {
        if (optind >= argc) {
            fprintf(stderr, "loadgen: --merge needs at least one FILE\n");
            return 1;
        }
        return lg_merge(argv + optind, argc - optind);
    }
    if (optind < argc) {
        fprintf(stderr, "loadgen: unexpected argument \"%s\"\n", argv[optind]);
        return 1;
    }
    if (opt.url == NULL) {
        fprintf(stderr, "loadgen: --url is required (see --help)\n");
        return 1;
    }
    /* The longest name any client will use must be a valid channel. */
    len = (size_t)snprintf(longest, sizeof(longest), "%s%u", opt.prefix, opt.channels - 1);
    if (len >= sizeof(longest) || !proto_channel_valid(longest, len)) {
        fprintf(stderr, "loadgen: channel names \"%s<n>\" would be invalid "
                        "(1-%d bytes of UTF-8, no control characters)\n",
                opt.prefix, PROTO_CHANNEL_MAX);
        return 1;
    }
    if (opt.filter != NULL && !proto_json_validate(opt.filter, strlen(opt.filter))) {
        fprintf(stderr, "loadgen: --filter is not valid JSON\n");
        return 1;
    }
    if (opt.filter != NULL && opt.query_mode)
        fprintf(stderr, "loadgen: warning: --filter is only sent in --subscribe-mode frame\n");
    if ((opt.since_path != NULL || opt.history > 0) && opt.query_mode) {
        fprintf(stderr, "loadgen: --since and --history need --subscribe-mode frame\n");
        return 1;
    }
    if (opt.expect > 0 && opt.idle) {
        fprintf(stderr, "loadgen: --expect counts messages, which --idle does not\n");
        return 1;
    }
    if (opt.since_path != NULL && lg_since_load(opt.since_path) != 0)
        goto done;
    if (lg_parse_url(opt.url) != 0)
        goto done;
    if (opt.source_ips > 1 && opt.addr.ss_family != AF_INET) {
        fprintf(stderr, "loadgen: --source-ips needs an IPv4 destination\n");
        goto done;
    }
    if (!opt.tls && (opt.ca != NULL || opt.insecure || opt.tls_resume || opt.tls_version != NULL)) {
        fprintf(stderr, "loadgen: --ca, --insecure, --tls-resume and --tls-version need a "
                        "wss:// URL\n");
        goto done;
    }
    if (opt.ca != NULL && opt.insecure) {
        fprintf(stderr, "loadgen: --ca and --insecure exclude each other\n");
        goto done;
    }
    if (opt.tls && lg_tls_setup() != 0)
        goto done;
    if (lg_fd_limit() != 0)
        goto done;
    if (getrandom(&lg_seed, sizeof(lg_seed), 0) != (ssize_t)sizeof(lg_seed)) {
        perror("loadgen: getrandom");
        goto done;
    }
    lg_rng = lg_mix64(lg_seed);
    lg.conns = calloc(opt.connections, sizeof(*lg.conns));
    if (lg.conns == NULL) {
        fprintf(stderr, "loadgen: out of memory for %u connections\n", opt.connections);
        goto done;
    }
    for (i = 0; i < opt.connections; i++) {
        lg.conns[i].id = i;
        lg.conns[i].fd = -1;
    }
    if ((lg.ep = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        perror("loadgen: epoll_create1");
        goto done;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = lg_on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        perror("loadgen: sigaction");
        goto done;
    }
    res.processes = 1;
    if ((res.config = lg_config_json()) == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        goto done;
    }
    if (lg_run() != 0)
        goto done;
    if (lg_result_write(&res, opt.json_path) != 0)
        goto done;
    rc = res.opened == opt.connections ? 0 : 2;
done:
    if (lg.ep > 0)
        close(lg.ep);
    json_decref(res.config);
    free(lg.conns);
    free(lg_since);
    lg_tls_cleanup();
    free(opt.host);
    free(opt.hostport);
    free(opt.target);
    proto_buf_free(&lg_out);
    proto_buf_free(&lg_scratch);
    return rc;
}
