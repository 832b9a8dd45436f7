/* bench_jwt.c — ES256 signing rate: libjwt 1.10 against rtc_jwt, in one
 * process, on the same key, alternating. Shows why libs/jwt signs with
 * OpenSSL on a parsed key instead of calling libjwt (which parses the PEM
 * on every call). Usage: bench_jwt <private-key.pem> [seconds-per-run] */
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/core.h"
#include "rtc/jwt.h"

static double run_libjwt(const char *pem, size_t pemlen, double secs)
{
    uint64_t t0 = rtc_now_ms(), n = 0;
    while (rtc_now_ms() - t0 < secs * 1000) {
        jwt_t *j = NULL;
        if (jwt_new(&j) != 0)
            exit(1);
        jwt_add_grant(j, "sub", "bench-user");
        jwt_add_grant(j, "jti", "bench-jti-0123456789");
        jwt_add_grant_int(j, "exp", 2000000000);
        jwt_add_header(j, "kid", "bench");
        if (jwt_set_alg(j, JWT_ALG_ES256, (const unsigned char *)pem, (int)pemlen) != 0)
            exit(1);
        char *tok = jwt_encode_str(j);
        if (!tok)
            exit(1);
        free(tok);
        jwt_free(j);
        n++;
    }
    return (double)n * 1000.0 / (double)(rtc_now_ms() - t0);
}

static double run_rtc(const rtc_jwt_keyset *ks, double secs)
{
    rtc_jwt_claims c = {0};
    strcpy(c.identity, "bench-user");
    strcpy(c.token_id, "bench-jti-0123456789");
    c.expires_at_ms = 2000000000000LL;
    uint64_t t0 = rtc_now_ms(), n = 0;
    while (rtc_now_ms() - t0 < secs * 1000) {
        char *tok = NULL;
        if (rtc_jwt_sign(ks, &c, &tok) != 0)
            exit(1);
        free(tok);
        n++;
    }
    return (double)n * 1000.0 / (double)(rtc_now_ms() - t0);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s <p256-private-key.pem> [seconds-per-run]\n", argv[0]);
        return 2;
    }
    double secs = argc > 2 ? atof(argv[2]) : 3;
    char *pem;
    size_t len;
    rtc_jwt_keyset *ks;
    if (rtc_read_file(argv[1], 65536, &pem, &len) < 0 || rtc_jwt_keyset_new(&ks) < 0 ||
        rtc_jwt_keyset_add_pem(ks, pem, len, NULL, 0, NULL) < 0) {
        fprintf(stderr, "%s: not a readable P-256 private key\n", argv[1]);
        return 2;
    }
    double a1 = run_libjwt(pem, len, secs), b1 = run_rtc(ks, secs);
    double b2 = run_rtc(ks, secs), a2 = run_libjwt(pem, len, secs);
    double a = (a1 + a2) / 2, b = (b1 + b2) / 2;
    printf("libjwt jwt_encode_str (ES256): %.0f signs/s (runs %.0f, %.0f)\n", a, a1, a2);
    printf("rtc_jwt_sign:                  %.0f signs/s (runs %.0f, %.0f)\n", b, b1, b2);
    printf("ratio rtc_jwt / libjwt:        %.1f\n", b / a);
    rtc_jwt_keyset_free(ks);
    free(pem);
    return 0;
}
