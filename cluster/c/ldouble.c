/* INCRBYFLOAT exactly as Redis 7 computes it: both operands parsed with strtold (Redis's
 * string2ld), added as long double, printed with "%.17Lf" and trailing zeros removed (Redis's
 * ld2string in LD_STR_HUMAN mode). Rust has no long double, and f64 gives different digits
 * (0.1 + 0.2 prints 0.3 in Redis), so this stays in C. Pure: no IO, no global state. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LONG_DOUBLE_CHARS (5 * 1024)

static int string2ld(const unsigned char *s, size_t slen, long double *dp) {
    char buf[MAX_LONG_DOUBLE_CHARS];
    long double value;
    char *eptr;
    if (slen == 0 || slen >= sizeof(buf)) return 0;
    memcpy(buf, s, slen);
    buf[slen] = '\0';
    errno = 0;
    value = strtold(buf, &eptr);
    if (isspace((unsigned char)buf[0]) || (size_t)(eptr - buf) != slen ||
        ((errno == ERANGE) &&
         (value == HUGE_VALL || value == -HUGE_VALL || fpclassify(value) == FP_ZERO)) ||
        isnan(value))
        return 0;
    *dp = value;
    return 1;
}

/* Returns the length written to out, -1 if an operand is not a valid float, -2 if the result is
 * NaN or infinite, -3 if out is too small. */
long hc_incrbyfloat(const unsigned char *cur, size_t curlen, int has_cur,
                    const unsigned char *incr, size_t incrlen, char *out, size_t outlen) {
    long double value = 0, by = 0;
    if (has_cur && !string2ld(cur, curlen, &value)) return -1;
    if (!string2ld(incr, incrlen, &by)) return -1;
    value += by;
    if (isnan(value) || isinf(value)) return -2;
    int n = snprintf(out, outlen, "%.17Lf", value);
    if (n < 0 || (size_t)n + 1 > outlen) return -3;
    size_t l = (size_t)n;
    if (strchr(out, '.') != NULL) {
        char *p = out + l - 1;
        while (*p == '0') { p--; l--; }
        if (*p == '.') l--;
    }
    if (l == 2 && out[0] == '-' && out[1] == '0') { out[0] = '0'; l = 1; }
    return (long)l;
}

/* Validates a float argument the way Redis's getLongDoubleFromObject does. */
int hc_is_long_double(const unsigned char *s, size_t slen) {
    long double v;
    return string2ld(s, slen, &v);
}
