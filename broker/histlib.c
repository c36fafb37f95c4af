/* histlib.c: the Redis function library of channel history (see histlib.h). */
#include "histlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Everything after the line of parameters; the first lines are written by
 * hlib_code(). Kept byte for byte as `broker --history-library` prints it,
 * which is also what the broker compares with the library Redis has. */
static const char BODY[] =
    "\n"
    "-- The history keys of a channel, in the channel's hash slot: its hash tag,\n"
    "-- or the whole name as one.\n"
    "local function base(ch)\n"
    "  local o = string.find(ch, '{', 1, true)\n"
    "  if o then\n"
    "    local c = string.find(ch, '}', o + 1, true)\n"
    "    if c and c > o + 1 then\n"
    "      return 'broker:{' .. string.sub(ch, o + 1, c - 1) .. '}:' .. ch\n"
    "    end\n"
    "  end\n"
    "  if string.find(ch, '}', 1, true) then\n"
    "    return nil\n"
    "  end\n"
    "  return 'broker:{' .. ch .. '}'\n"
    "end\n"
    "\n"
    "local DIGITS = '0123456789abcdefghijklmnopqrstuvwxyz'\n"
    "local function b36(n)\n"
    "  local s = ''\n"
    "  repeat\n"
    "    local d = n % 36\n"
    "    s = string.sub(DIGITS, d + 1, d + 1) .. s\n"
    "    n = math.floor(n / 36)\n"
    "  until n == 0\n"
    "  return s\n"
    "end\n"
    "\n"
    "local function publish(keys, args)\n"
    "  local ch, payload = keys[1], args[1]\n"
    "  local b = base(ch)\n"
    "  if not b then\n"
    "    return redis.error_reply('ERR this channel name cannot have history: a } without a hash tag')\n"
    "  end\n"
    "  if payload == nil then\n"
    "    return redis.error_reply('ERR usage: FCALL broker_publish 1 channel payload [size] [ttl_s]')\n"
    "  end\n"
    "  local size = tonumber(args[2]) or SIZE\n"
    "  local ttl = tonumber(args[3]) or TTL\n"
    "  if size < 1 or ttl < 1 then\n"
    "    return redis.error_reply('ERR size and ttl_s must be positive')\n"
    "  end\n"
    "  local m, s = b .. ':m', b .. ':s'\n"
    "  local epoch = redis.call('HGET', m, 'e')\n"
    "  if not epoch then\n"
    "    -- A new history: a new epoch, and no stream left from an old one.\n"
    "    local t = redis.call('TIME')\n"
    "    epoch = b36(tonumber(t[1])) .. b36(tonumber(t[2]))\n"
    "    redis.call('HSET', m, 'e', epoch)\n"
    "    redis.call('DEL', s)\n"
    "  end\n"
    "  local off = redis.call('HINCRBY', m, 'o', 1)\n"
    "  redis.call('XADD', s, 'MAXLEN', size, off .. '-0', 'p', payload)\n"
    "  redis.call('PEXPIRE', m, ttl * 1000)\n"
    "  redis.call('PEXPIRE', s, ttl * 1000)\n"
    "  redis.call(PUB, ch, '\\0H' .. off .. ':' .. epoch .. '\\0' .. payload)\n"
    "  return off\n"
    "end\n"
    "\n"
    "-- {epoch, last offset, first offset in the stream, offset, payload, ...}:\n"
    "-- what follows offset `after` (args[2] 'after'), or the last n (args[2]\n"
    "-- 'last'), at most n (args[1]) entries. An unknown channel: {'', 0, 0}.\n"
    "local function range(keys, args)\n"
    "  local b = base(keys[1])\n"
    "  if not b then\n"
    "    return {'', 0, 0}\n"
    "  end\n"
    "  local m, s = b .. ':m', b .. ':s'\n"
    "  local meta = redis.call('HMGET', m, 'e', 'o')\n"
    "  if not meta[1] then\n"
    "    return {'', 0, 0}\n"
    "  end\n"
    "  local n, mode, after = tonumber(args[1]), args[2], args[3]\n"
    "  local out = {meta[1], tonumber(meta[2]) or 0, 0}\n"
    "  local head = redis.call('XRANGE', s, '-', '+', 'COUNT', 1)\n"
    "  if head[1] then\n"
    "    out[3] = tonumber(string.match(head[1][1], '^(%d+)'))\n"
    "  end\n"
    "  if n and n > 0 then\n"
    "    local e\n"
    "    if mode == 'last' then\n"
    "      e = redis.call('XREVRANGE', s, '+', '-', 'COUNT', n)\n"
    "      for i = #e, 1, -1 do\n"
    "        out[#out + 1] = tonumber(string.match(e[i][1], '^(%d+)'))\n"
    "        out[#out + 1] = e[i][2][2]\n"
    "      end\n"
    "    else\n"
    "      e = redis.call('XRANGE', s, '(' .. (after or '0') .. '-0', '+', 'COUNT', n)\n"
    "      for i = 1, #e do\n"
    "        out[#out + 1] = tonumber(string.match(e[i][1], '^(%d+)'))\n"
    "        out[#out + 1] = e[i][2][2]\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "\n"
    "redis.register_function('broker_publish', publish)\n"
    "redis.register_function{function_name = 'broker_range', callback = range, flags = {'no-writes'}}\n";

int hlib_code(struct proto_buf *out, long long size, long long ttl_s, int sharded)
{
    proto_buf_reset(out);
    if (proto_buf_printf(out,
                         "#!lua name=broker\n"
                         "-- broker history library (version %d; history_size %lld, history_ttl_s "
                         "%lld, %s)\n"
                         "local SIZE, TTL, PUB = %lld, %lld, '%s'\n",
                         HLIB_VERSION, size, ttl_s, sharded ? "SPUBLISH" : "PUBLISH", size, ttl_s,
                         sharded ? "SPUBLISH" : "PUBLISH") != 0)
        return -1;
    return proto_buf_append(out, BODY, sizeof(BODY) - 1);
}

/* Loading, over one command connection. */

struct load {
    struct rconn *c;
    struct proto_buf code;
    char where[160];
};

static void loaded(void *arg, const redisReply *r)
{
    struct load *l = arg;

    if (r == NULL)
        log_warn("history: %s went away before the library was loaded", l->where);
    else if (r->type == REDIS_REPLY_ERROR)
        log_error("history: FUNCTION LOAD on %s refused: %s (FCALL broker_publish will fail "
                  "there)",
                  l->where, r->str);
    else
        log_info("history: library loaded on %s", l->where);
    proto_buf_free(&l->code);
    free(l);
}

/* FUNCTION LIST LIBRARYNAME broker WITHCODE: [[library_name, broker, engine,
 * LUA, functions, [...], library_code, "..."]] in RESP2. */
static int same_code(const redisReply *r, const struct proto_buf *code)
{
    size_t i;

    if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 ||
        r->element[0]->type != REDIS_REPLY_ARRAY)
        return 0;
    r = r->element[0];
    for (i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && strcmp(k->str, "library_code") == 0)
            return v->type == REDIS_REPLY_STRING && v->len == code->len &&
                   memcmp(v->str, code->data, code->len) == 0;
    }
    return 0;
}

static void listed(void *arg, const redisReply *r)
{
    struct load *l = arg;
    const char *argv[3] = {"FUNCTION", "LOAD", "REPLACE"};
    size_t argl[4] = {8, 4, 7, 0};
    const char *av[4];

    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        if (r != NULL)
            log_warn("history: %s cannot list functions (%s): Redis 7 is needed for history",
                     l->where, r->str);
        proto_buf_free(&l->code);
        free(l);
        return;
    }
    if (same_code(r, &l->code)) {
        log_debug("history: library already on %s", l->where);
        proto_buf_free(&l->code);
        free(l);
        return;
    }
    memcpy(av, argv, sizeof(argv));
    av[3] = l->code.data;
    argl[3] = l->code.len;
    if (rconn_command(l->c, loaded, l, 4, av, argl) != 0) {
        proto_buf_free(&l->code);
        free(l);
    }
}

void hlib_load(struct rconn *c, long long size, long long ttl_s, int sharded)
{
    static const char *const argv[5] = {"FUNCTION", "LIST", "LIBRARYNAME", "broker",
                                        "WITHCODE"};
    static const size_t argl[5] = {8, 4, 11, 6, 8};
    struct load *l = calloc(1, sizeof(*l));

    if (l == NULL || hlib_code(&l->code, size, ttl_s, sharded) != 0) {
        log_error("history: out of memory loading the library");
        if (l != NULL)
            proto_buf_free(&l->code);
        free(l);
        return;
    }
    l->c = c;
    snprintf(l->where, sizeof(l->where), "%s:%d", rconn_host(c) ? rconn_host(c) : "?",
             rconn_port(c));
    if (rconn_command(c, listed, l, 5, argv, argl) != 0) {
        proto_buf_free(&l->code);
        free(l);
    }
}
