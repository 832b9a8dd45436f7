/* b64url.c — base64url without padding (RFC 4648 §5), as JWS uses it.
 *
 * Decoding is strict on purpose: a token has exactly one spelling. Padding,
 * characters outside the alphabet, a length no encoder produces and
 * non-zero trailing bits are all refused, so two different strings can
 * never carry the same signed bytes (and the verified-token cache, keyed
 * by the string, cannot be fooled into treating them differently). */
#include <stdint.h>

#include "jwt_internal.h"

static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* 0x80 | value for the 64 characters of the alphabet; 0 (the zero-initialised
 * rest) for everything else. */
static const uint8_t DECODE[256] = {
    ['A'] = 0x80 | 0,  ['B'] = 0x80 | 1,  ['C'] = 0x80 | 2,  ['D'] = 0x80 | 3,  ['E'] = 0x80 | 4,
    ['F'] = 0x80 | 5,  ['G'] = 0x80 | 6,  ['H'] = 0x80 | 7,  ['I'] = 0x80 | 8,  ['J'] = 0x80 | 9,
    ['K'] = 0x80 | 10, ['L'] = 0x80 | 11, ['M'] = 0x80 | 12, ['N'] = 0x80 | 13, ['O'] = 0x80 | 14,
    ['P'] = 0x80 | 15, ['Q'] = 0x80 | 16, ['R'] = 0x80 | 17, ['S'] = 0x80 | 18, ['T'] = 0x80 | 19,
    ['U'] = 0x80 | 20, ['V'] = 0x80 | 21, ['W'] = 0x80 | 22, ['X'] = 0x80 | 23, ['Y'] = 0x80 | 24,
    ['Z'] = 0x80 | 25, ['a'] = 0x80 | 26, ['b'] = 0x80 | 27, ['c'] = 0x80 | 28, ['d'] = 0x80 | 29,
    ['e'] = 0x80 | 30, ['f'] = 0x80 | 31, ['g'] = 0x80 | 32, ['h'] = 0x80 | 33, ['i'] = 0x80 | 34,
    ['j'] = 0x80 | 35, ['k'] = 0x80 | 36, ['l'] = 0x80 | 37, ['m'] = 0x80 | 38, ['n'] = 0x80 | 39,
    ['o'] = 0x80 | 40, ['p'] = 0x80 | 41, ['q'] = 0x80 | 42, ['r'] = 0x80 | 43, ['s'] = 0x80 | 44,
    ['t'] = 0x80 | 45, ['u'] = 0x80 | 46, ['v'] = 0x80 | 47, ['w'] = 0x80 | 48, ['x'] = 0x80 | 49,
    ['y'] = 0x80 | 50, ['z'] = 0x80 | 51, ['0'] = 0x80 | 52, ['1'] = 0x80 | 53, ['2'] = 0x80 | 54,
    ['3'] = 0x80 | 55, ['4'] = 0x80 | 56, ['5'] = 0x80 | 57, ['6'] = 0x80 | 58, ['7'] = 0x80 | 59,
    ['8'] = 0x80 | 60, ['9'] = 0x80 | 61, ['-'] = 0x80 | 62, ['_'] = 0x80 | 63,
};
#define VALID(c) (DECODE[(uint8_t)(c)] & 0x80)
#define VALUE(c) (DECODE[(uint8_t)(c)] & 0x3f)

size_t jwt_b64url_len(size_t n)
{
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

void jwt_b64url_encode(const uint8_t *in, size_t n, char *out)
{
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *out++ = ALPHABET[v >> 18];
        *out++ = ALPHABET[(v >> 12) & 63];
        *out++ = ALPHABET[(v >> 6) & 63];
        *out++ = ALPHABET[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *out++ = ALPHABET[v >> 18];
        *out++ = ALPHABET[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *out++ = ALPHABET[v >> 18];
        *out++ = ALPHABET[(v >> 12) & 63];
        *out++ = ALPHABET[(v >> 6) & 63];
    }
    *out = '\0';
}

bool jwt_b64url_charset_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!VALID(s[i]))
            return false;
    return true;
}

int jwt_b64url_decode(const char *in, size_t n, uint8_t *out, size_t *outlen)
{
    if (n % 4 == 1)
        return -1;
    size_t o = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        if (!VALID(in[i]) || !VALID(in[i + 1]) || !VALID(in[i + 2]) || !VALID(in[i + 3]))
            return -1;
        uint32_t v = (uint32_t)VALUE(in[i]) << 18 | (uint32_t)VALUE(in[i + 1]) << 12 |
                     (uint32_t)VALUE(in[i + 2]) << 6 | VALUE(in[i + 3]);
        out[o++] = (uint8_t)(v >> 16);
        out[o++] = (uint8_t)(v >> 8);
        out[o++] = (uint8_t)v;
    }
    size_t rest = n - i;
    if (rest >= 2) {
        for (size_t j = 0; j < rest; j++)
            if (!VALID(in[i + j]))
                return -1;
        uint32_t v = (uint32_t)VALUE(in[i]) << 18 | (uint32_t)VALUE(in[i + 1]) << 12;
        if (rest == 3)
            v |= (uint32_t)VALUE(in[i + 2]) << 6;
        /* Bits below the last whole byte must be zero. */
        if (rest == 2 ? (v & 0xffff) : (v & 0xff))
            return -1;
        out[o++] = (uint8_t)(v >> 16);
        if (rest == 3)
            out[o++] = (uint8_t)(v >> 8);
    }
    *outlen = o;
    return 0;
}
