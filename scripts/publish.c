/* publish.c: a Redis publisher for benchmarks of the broker.
 *
 * Sends PUBLISH <prefix><n> <payload> over one hiredis connection (the sync
 * API, pipelined: up to --pipeline commands are appended with
 * redisAppendCommandArgv, binary-safe, then their replies read), round-robin
 * over K channels, at a steady --rate or as fast as Redis answers.
 *
 * Each payload is a JSON object of about the requested size,
 *   {"ts":<us since the epoch, CLOCK_REALTIME>,"seq":<n>,"pad":"xxx..."}
 * so that scripts/loadgen.c can measure publish-to-receipt latency from
 * "ts". Rate control works in 1 ms ticks: each tick sends the messages that
 * are due by then, so the rate holds on average without a timer per message.
 *
 * Reports a line per second on stderr and a JSON summary at the end (stdout
 * or --json FILE). See --help and scripts/TOOLS.md. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#define PUB_SIZES_MAX 16
#define PUB_SIZE_MAX (64u << 20) /* Redis's proto-max-bulk-len is far above */
#define PUB_HEAD_MAX 64          /* {"ts":...,"seq":...,"pad":" at most */

static struct {
    char host[256];
    int port;
    double rate;      /* msgs/s, 0 = as fast as possible */
    double duration;  /* s, 0 = no limit */
    uint64_t count;   /* 0 = no limit */
    uint32_t channels;
    const char *prefix;
    const char *mix;  /* as given, for the summary */
    struct {
        size_t size;
        double weight;
    } sizes[PUB_SIZES_MAX];
    unsigned nsizes;
    double weight_sum;
    size_t max_size;
    uint32_t pipeline;
    const char *json_path;
    int quiet;
    int history;      /* --history: FCALL broker_publish instead of PUBLISH */
} opt = {
    .host = "127.0.0.1",
    .port = 6379,
    .channels = 1,
    .prefix = "ch",
    .pipeline = 100,
};

static struct {
    uint64_t sent, bytes, reached, errors;
    uint64_t last_offset; /* --history: the greatest offset answered */
    double elapsed_s;
    int lost;           /* the Redis connection failed */
} res;

static volatile sig_atomic_t pub_stop;
static uint64_t pub_rng;
static char **pub_names; /* channel names, built once */
static size_t *pub_name_lens;
static char *pub_payload_buf;

static void pub_on_signal(int sig)
{
    (void)sig;
    pub_stop = 1;
}

static int64_t pub_clock_us(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* splitmix64, for the size mix. */
static uint64_t pub_rand(void)
{
    uint64_t x = (pub_rng += 0x9e3779b97f4a7c15ULL);

    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static size_t pub_pick_size(void)
{
    double u;
    unsigned i;

    if (opt.nsizes == 1)
        return opt.sizes[0].size;
    u = (double)(pub_rand() >> 11) / 9007199254740992.0 * opt.weight_sum;
    for (i = 0; i + 1 < opt.nsizes; i++) {
        if (u < opt.sizes[i].weight)
            return opt.sizes[i].size;
        u -= opt.sizes[i].weight;
    }
    return opt.sizes[opt.nsizes - 1].size;
}

/* Writes message seq, of about size bytes, into pub_payload_buf and
 * returns its length: the target exactly, unless the target is smaller than
 * the object with an empty pad. */
static size_t pub_payload(uint64_t seq, size_t size)
{
    char *b = pub_payload_buf;
    int h = snprintf(b, PUB_HEAD_MAX, "{\"ts\":%lld,\"seq\":%llu,\"pad\":\"",
                     (long long)pub_clock_us(CLOCK_REALTIME), (unsigned long long)seq);
    size_t head = (size_t)h, pad = size > head + 2 ? size - head - 2 : 0;

    memset(b + head, 'x', pad);
    memcpy(b + head + pad, "\"}", 2);
    return head + pad + 2;
}

/* Sends n messages: appends them all, then reads their n replies. Returns
 * 0, or -1 when the connection failed (res.lost is then set). */
static int pub_batch(redisContext *rc, uint32_t n)
{
    /* PUBLISH CHANNEL PAYLOAD, or FCALL broker_publish 1 CHANNEL PAYLOAD:
     * the channel and payload are the last two arguments either way. */
    const char *argv[5] = {"FCALL", "broker_publish", "1"};
    size_t argvlen[5] = {5, 14, 1};
    int first = opt.history ? 0 : 2, argc = opt.history ? 5 : 3;
    redisReply *reply;
    uint32_t i, ch;

    if (!opt.history) {
        argv[2] = "PUBLISH";
        argvlen[2] = 7;
    }
    for (i = 0; i < n; i++) {
        ch = (uint32_t)((res.sent + i) % opt.channels);
        argv[3] = pub_names[ch];
        argvlen[3] = pub_name_lens[ch];
        argv[4] = pub_payload_buf;
        argvlen[4] = pub_payload(res.sent + i, pub_pick_size());
        /* hiredis copies the arguments into its output buffer, so the
         * payload buffer is free again for the next message. */
        if (redisAppendCommandArgv(rc, argc, argv + first, argvlen + first) != REDIS_OK)
            goto lost;
        res.bytes += argvlen[4];
    }
    for (i = 0; i < n; i++) {
        if (redisGetReply(rc, (void **)&reply) != REDIS_OK || reply == NULL)
            goto lost;
        if (reply->type == REDIS_REPLY_INTEGER && opt.history) {
            if ((uint64_t)reply->integer > res.last_offset)
                res.last_offset = (uint64_t)reply->integer;
        } else if (reply->type == REDIS_REPLY_INTEGER) {
            res.reached += (uint64_t)reply->integer;
        } else {
            if (res.errors == 0 && reply->type == REDIS_REPLY_ERROR)
                fprintf(stderr, "publish: Redis error: %.*s (first of its kind)\n",
                        (int)reply->len, reply->str);
            res.errors++;
        }
        freeReplyObject(reply);
    }
    res.sent += n;
    return 0;
lost:
    fprintf(stderr, "publish: Redis %s:%d: %s\n", opt.host, opt.port,
            rc->errstr[0] ? rc->errstr : "connection lost");
    res.lost = 1;
    return -1;
}

/* Publishes until --count, --duration or SIGINT. */
static void pub_run(redisContext *rc)
{
    int64_t t0 = pub_clock_us(CLOCK_MONOTONIC), now = t0, next_report = t0 + 1000000;
    uint64_t due, todo, last_sent = 0;
    int64_t last_t = t0;
    struct timespec ts;
    uint32_t b;

    while (!pub_stop) {
        now = pub_clock_us(CLOCK_MONOTONIC);
        if (now >= next_report) {
            if (!opt.quiet)
                fprintf(stderr, "t=%.0fs sent=%llu rate=%.0f/s reached=%llu errors=%llu\n",
                        (double)(now - t0) / 1e6, (unsigned long long)res.sent,
                        (double)(res.sent - last_sent) * 1e6 / (double)(now - last_t),
                        (unsigned long long)res.reached, (unsigned long long)res.errors);
            last_sent = res.sent;
            last_t = now;
            next_report += 1000000;
        }
        if (opt.duration > 0 && now - t0 >= (int64_t)(opt.duration * 1e6))
            break;
        if (opt.count > 0 && res.sent >= opt.count)
            break;
        if (opt.rate > 0) {
            /* What should have gone out by now; a late tick catches up. */
            due = (uint64_t)(opt.rate * (double)(now - t0) / 1e6);
            if (opt.count > 0 && due > opt.count)
                due = opt.count;
            todo = due > res.sent ? due - res.sent : 0;
            if (todo == 0) {
                /* Sleep to the next 1 ms tick. */
                int64_t wake = t0 + ((now - t0) / 1000 + 1) * 1000;
                ts.tv_sec = (time_t)(wake / 1000000);
                ts.tv_nsec = (long)(wake % 1000000) * 1000;
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
                continue;
            }
        } else {
            todo = opt.pipeline;
            if (opt.count > 0 && todo > opt.count - res.sent)
                todo = opt.count - res.sent;
        }
        while (todo > 0 && !pub_stop) {
            b = todo < opt.pipeline ? (uint32_t)todo : opt.pipeline;
            if (pub_batch(rc, b) != 0)
                goto done;
            todo -= b;
        }
    }
done:
    res.elapsed_s = (double)(pub_clock_us(CLOCK_MONOTONIC) - t0) / 1e6;
}

static void pub_usage(FILE *f)
{
    fprintf(f,
"usage: publish [options]\n"
"\n"
"Publishes JSON payloads {\"ts\":<us since epoch>,\"seq\":<n>,\"pad\":\"xx...\"} to\n"
"Redis with PUBLISH, round-robin over channels PREFIX0..PREFIX<K-1>, pipelined\n"
"on one connection. Prints a line per second on stderr and a JSON summary at\n"
"the end (stdout, or --json FILE). Stops at --count, --duration or SIGINT.\n"
"\n"
"      --redis HOST:PORT  Redis to publish to (default 127.0.0.1:6379)\n"
"  -r, --rate R           messages per second; 0 = as fast as possible (default 0)\n"
"  -d, --duration S       stop after S seconds (default: no limit)\n"
"  -n, --count N          stop after N messages (default: no limit)\n"
"  -k, --channels K       number of channels (default 1)\n"
"      --prefix P         channel name prefix (default \"ch\")\n"
"  -s, --size BYTES       payload size (default 100)\n"
"      --mix SIZE:WEIGHT,...  random sizes with relative weights, e.g.\n"
"                         250:99,3000:0.99,30000:0.01 (replaces --size)\n"
"  -p, --pipeline N       commands sent before their replies are read\n"
"                         (default 100)\n"
"      --history          publish with the broker's Redis function, FCALL\n"
"                         broker_publish 1 CHANNEL PAYLOAD (PROTOCOL.md section\n"
"                         7): the channels keep a history; last_offset is the\n"
"                         greatest offset answered\n"
"      --json FILE        write the summary to FILE instead of stdout\n"
"  -q, --quiet            no per-second lines\n"
"  -h, --help             this text\n"
"\n"
"A payload is exactly its size, unless the size is below the object with an\n"
"empty pad (about 45 bytes). \"subscribers_reached\" adds up PUBLISH replies:\n"
"Redis subscribers, i.e. broker links, not WebSocket clients.\n"
"Exit status: 0; 1 on a usage error or when the Redis connection failed.\n");
}

static int pub_parse_u64(const char *s, const char *what, uint64_t min, uint64_t max,
                         uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max) {
        fprintf(stderr, "publish: %s must be an integer from %llu to %llu, not \"%s\"\n",
                what, (unsigned long long)min, (unsigned long long)max, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int pub_parse_num(const char *s, const char *what, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= 0) || v > 1e12) {
        fprintf(stderr, "publish: %s must be a number >= 0, not \"%s\"\n", what, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Parses SIZE:WEIGHT,SIZE:WEIGHT,... (weights relative, > 0). */
static int pub_parse_mix(const char *s)
{
    const char *p = s;
    char *end;
    unsigned long long size;
    double w;

    opt.nsizes = 0;
    opt.weight_sum = 0;
    while (*p != '\0') {
        errno = 0;
        size = strtoull(p, &end, 10);
        if (errno != 0 || end == p || *end != ':' || *p == '-' || size > PUB_SIZE_MAX)
            goto bad;
        p = end + 1;
        w = strtod(p, &end);
        if (end == p || !(w > 0) || w > 1e12 || (*end != ',' && *end != '\0'))
            goto bad;
        if (opt.nsizes == PUB_SIZES_MAX) {
            fprintf(stderr, "publish: --mix takes at most %d sizes\n", PUB_SIZES_MAX);
            return -1;
        }
        opt.sizes[opt.nsizes].size = (size_t)size;
        opt.sizes[opt.nsizes].weight = w;
        opt.nsizes++;
        opt.weight_sum += w;
        p = *end == ',' ? end + 1 : end;
    }
    if (opt.nsizes > 0)
        return 0;
bad:
    fprintf(stderr, "publish: --mix is SIZE:WEIGHT,... (e.g. 250:99,3000:0.99,30000:0.01), "
                    "not \"%s\"\n", s);
    return -1;
}

static int pub_parse_redis(const char *s)
{
    const char *colon = strrchr(s, ':');
    size_t hlen = colon ? (size_t)(colon - s) : strlen(s);
    uint64_t port = 6379;

    if (hlen == 0 || hlen >= sizeof(opt.host)) {
        fprintf(stderr, "publish: --redis is HOST:PORT, not \"%s\"\n", s);
        return -1;
    }
    if (colon != NULL && pub_parse_u64(colon + 1, "the --redis port", 1, 65535, &port) != 0)
        return -1;
    memcpy(opt.host, s, hlen);
    opt.host[hlen] = '\0';
    opt.port = (int)port;
    return 0;
}

static int pub_write_summary(void)
{
    json_t *sizes = json_array(), *j;
    FILE *f = stdout;
    unsigned i;
    int rc = -1;

    if (sizes == NULL)
        return -1;
    for (i = 0; i < opt.nsizes; i++) {
        if (json_array_append_new(sizes, json_pack("[If]", (json_int_t)opt.sizes[i].size,
                                                   opt.sizes[i].weight)) != 0) {
            json_decref(sizes);
            return -1;
        }
    }
    j = json_pack("{ss s{ss sf sf sI sI ss so sI sb} sI sI sf sf sI sI sb sI}",
                  "tool", "publish",
                  "config",
                      "redis", opt.host,
                      "rate", opt.rate,
                      "duration_s", opt.duration,
                      "count", (json_int_t)opt.count,
                      "channels", (json_int_t)opt.channels,
                      "prefix", opt.prefix,
                      "sizes", sizes,
                      "pipeline", (json_int_t)opt.pipeline,
                      "history", opt.history,
                  "messages", (json_int_t)res.sent,
                  "bytes", (json_int_t)res.bytes,
                  "elapsed_s", round(res.elapsed_s * 1000.0) / 1000.0,
                  "rate", res.elapsed_s > 0 ? round((double)res.sent / res.elapsed_s * 10.0) / 10.0 : 0.0,
                  "subscribers_reached", (json_int_t)res.reached,
                  "errors", (json_int_t)res.errors,
                  "connection_lost", res.lost,
                  "last_offset", (json_int_t)res.last_offset);
    if (j == NULL) {
        fprintf(stderr, "publish: cannot build the summary\n");
        return -1;
    }
    if (opt.json_path != NULL && (f = fopen(opt.json_path, "w")) == NULL) {
        fprintf(stderr, "publish: %s: %s\n", opt.json_path, strerror(errno));
        goto done;
    }
    if (json_dumpf(j, f, JSON_INDENT(2) | JSON_REAL_PRECISION(15)) != 0 ||
        fputc('\n', f) == EOF || fflush(f) != 0) {
        fprintf(stderr, "publish: cannot write the summary\n");
        goto done;
    }
    rc = 0;
done:
    if (f != NULL && f != stdout && fclose(f) != 0)
        rc = -1;
    json_decref(j);
    return rc;
}

int main(int argc, char **argv)
{
    enum { O_REDIS = 256, O_PREFIX, O_MIX, O_JSON, O_HISTORY };
    static const struct option longopts[] = {
        {"redis", required_argument, NULL, O_REDIS},
        {"rate", required_argument, NULL, 'r'},
        {"duration", required_argument, NULL, 'd'},
        {"count", required_argument, NULL, 'n'},
        {"channels", required_argument, NULL, 'k'},
        {"prefix", required_argument, NULL, O_PREFIX},
        {"size", required_argument, NULL, 's'},
        {"mix", required_argument, NULL, O_MIX},
        {"pipeline", required_argument, NULL, 'p'},
        {"json", required_argument, NULL, O_JSON},
        {"quiet", no_argument, NULL, 'q'},
        {"history", no_argument, NULL, O_HISTORY},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    struct timeval tv = {5, 0};
    struct sigaction sa;
    redisContext *rc = NULL;
    uint64_t v, size = 100;
    unsigned i;
    int ch, status = 1;

    while ((ch = getopt_long(argc, argv, "r:d:n:k:s:p:qh", longopts, NULL)) != -1) {
        switch (ch) {
        case O_REDIS:
            if (pub_parse_redis(optarg) != 0)
                return 1;
            break;
        case 'r':
            if (pub_parse_num(optarg, "--rate", &opt.rate) != 0)
                return 1;
            break;
        case 'd':
            if (pub_parse_num(optarg, "--duration", &opt.duration) != 0)
                return 1;
            break;
        case 'n':
            if (pub_parse_u64(optarg, "--count", 0, UINT64_MAX / 2, &opt.count) != 0)
                return 1;
            break;
        case 'k':
            if (pub_parse_u64(optarg, "--channels", 1, 10000000, &v) != 0)
                return 1;
            opt.channels = (uint32_t)v;
            break;
        case O_PREFIX: opt.prefix = optarg; break;
        case 's':
            if (pub_parse_u64(optarg, "--size", 0, PUB_SIZE_MAX, &size) != 0)
                return 1;
            opt.mix = NULL;
            break;
        case O_MIX: opt.mix = optarg; break;
        case 'p':
            if (pub_parse_u64(optarg, "--pipeline", 1, 1000000, &v) != 0)
                return 1;
            opt.pipeline = (uint32_t)v;
            break;
        case O_JSON: opt.json_path = optarg; break;
        case 'q': opt.quiet = 1; break;
        case O_HISTORY: opt.history = 1; break;
        case 'h': pub_usage(stdout); return 0;
        default: pub_usage(stderr); return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "publish: unexpected argument \"%s\"\n", argv[optind]);
        return 1;
    }
    if (opt.mix != NULL) {
        if (pub_parse_mix(opt.mix) != 0)
            return 1;
    } else {
        opt.sizes[0].size = (size_t)size;
        opt.sizes[0].weight = 1;
        opt.nsizes = 1;
        opt.weight_sum = 1;
    }
    for (i = 0; i < opt.nsizes; i++)
        if (opt.sizes[i].size > opt.max_size)
            opt.max_size = opt.sizes[i].size;

    pub_names = calloc(opt.channels, sizeof(*pub_names));
    pub_name_lens = calloc(opt.channels, sizeof(*pub_name_lens));
    pub_payload_buf = malloc(opt.max_size + PUB_HEAD_MAX + 2);
    if (pub_names == NULL || pub_name_lens == NULL || pub_payload_buf == NULL)
        goto nomem;
    for (i = 0; i < opt.channels; i++) {
        int n = asprintf(&pub_names[i], "%s%u", opt.prefix, i);
        if (n < 0) {
            pub_names[i] = NULL;
            goto nomem;
        }
        pub_name_lens[i] = (size_t)n;
    }
    if (getrandom(&pub_rng, sizeof(pub_rng), 0) != (ssize_t)sizeof(pub_rng))
        pub_rng = (uint64_t)pub_clock_us(CLOCK_REALTIME);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = pub_on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0) {
        perror("publish: sigaction");
        goto done;
    }
    rc = redisConnectWithTimeout(opt.host, opt.port, tv);
    if (rc == NULL || rc->err) {
        fprintf(stderr, "publish: cannot connect to Redis %s:%d: %s\n", opt.host, opt.port,
                rc ? rc->errstr : "out of memory");
        goto done;
    }
    pub_run(rc);
    if (pub_write_summary() != 0)
        goto done;
    status = res.lost ? 1 : 0;
    goto done;
nomem:
    fprintf(stderr, "publish: out of memory\n");
done:
    if (rc != NULL)
        redisFree(rc);
    if (pub_names != NULL)
        for (i = 0; i < opt.channels; i++)
            free(pub_names[i]);
    free(pub_names);
    free(pub_name_lens);
    free(pub_payload_buf);
    return status;
}
