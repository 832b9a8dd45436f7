/* ws_client.h — the load generator's WebSocket client: libuv TCP, the
 * RFC 6455 opening handshake, and wslay for the frames.
 *
 * libwebsockets 4.1's client parses incoming frames and masks outgoing
 * ones a byte at a time: ~40 % of bench_relay's CPU, taken from the 2 cores
 * the servers under test share with it. wslay (by nghttp2's author) does
 * the framing a buffer at a time; the handshake is a fixed request and a
 * check of the 101 answer (Sec-WebSocket-Accept, the subprotocol).
 *
 * Single-threaded, on the caller's loop. Callbacks may call wsc_send_text,
 * wsc_close and wsc_abort on any connection, their own included. */
#ifndef BENCH_WS_CLIENT_H
#define BENCH_WS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct wsc wsc;

typedef struct wsc_callbacks {
    /* The 101 answer checked out: sending is possible from now on. */
    void (*on_open)(void *ud);
    /* One complete text message (fragments joined). */
    void (*on_text)(void *ud, const char *text, size_t len);
    /* The connection is gone; exactly once per wsc_connect that returned
     * 0, never after wsc_abort. why says how, e.g. "closed by the server
     * (1001 going away)", "connection refused", "handshake: 403". The wsc
     * is freed after this returns. */
    void (*on_closed)(void *ud, const char *why);
} wsc_callbacks;

/* Connects to host:port (a numeric address, or a name resolved here,
 * blocking) from src (a local address to bind, or NULL) and sends the
 * opening handshake for path, asking for subprotocol (or none when NULL).
 * 0, or a negative libuv error code (nothing to free then). */
int wsc_connect(uv_loop_t *loop, const char *host, uint16_t port, const char *src, const char *path,
                const char *subprotocol, const wsc_callbacks *cb, void *ud, wsc **out);

/* Queues one text message and writes what the socket takes now (the rest
 * is queued by libuv, in order). 0, or -1 when not open, closing, or the
 * write failed (on_closed has then run). */
int wsc_send_text(wsc *w, const char *text, size_t len);

/* Starts the closing handshake (code, reason) once the messages queued
 * before it are written: on_closed follows when the server's close frame or
 * the end of the stream arrives. */
void wsc_close(wsc *w, uint16_t code, const char *reason);

/* Drops the connection now, without a callback. */
void wsc_abort(wsc *w);

#endif
