/* vdb_cpu — see vdb_cpu.h for the contract.
 *
 * x86-64: a feature counts as detected only when the CPU reports it (cpuid) AND the OS saves the
 * matching register state on context switches (XGETBV(0)); otherwise the first YMM/ZMM instruction
 * would fault or silently lose state. arm64: NEON is part of the base ISA.
 */
#include "vdb_cpu.h"

#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "vdb_distance.h"
#include "vdb_pq4.h"
#include "vdb_sq8.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

static pthread_once_t vdb_cpu_once = PTHREAD_ONCE_INIT;
static unsigned vdb_cpu_detected_mask;
static _Atomic unsigned vdb_cpu_enabled_mask;

#if defined(__x86_64__) || defined(__i386__)
static unsigned long long vdb_cpu_xgetbv0(void)
{
    unsigned eax, edx;
    /* The instruction itself, so no -mxsave is needed for _xgetbv(). */
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static unsigned vdb_cpu_detect(void)
{
    unsigned a, b, c, d, out = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    if (!osxsave || !avx)
        return 0;
    unsigned long long xcr0 = vdb_cpu_xgetbv0();
    int os_ymm = (xcr0 & 0x6) == 0x6;    /* SSE + AVX state */
    int os_zmm = (xcr0 & 0xE6) == 0xE6;  /* + opmask, ZMM_Hi256, Hi16_ZMM */
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1;
    int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
    if (avx2 && fma && os_ymm)
        out |= VDB_CPU_AVX2;
    /* The AVX-512 kernels may also use VEX AVX2/FMA forms, so they need those too. */
    if (f && dq && bw && vl && os_zmm && (out & VDB_CPU_AVX2))
        out |= VDB_CPU_AVX512;
    return out;
}
#elif defined(__aarch64__)
static unsigned vdb_cpu_detect(void) { return VDB_CPU_NEON; }
#else
static unsigned vdb_cpu_detect(void) { return 0; }
#endif

/* Parses VECTORDB_DISABLE_CPU_FEATURES: comma-separated, case-insensitive, blanks ignored.
 * Unknown names are ignored so an old build accepts a newer setting. */
static unsigned vdb_cpu_env_disabled(void)
{
    const char *s = getenv("VECTORDB_DISABLE_CPU_FEATURES");
    unsigned off = 0;
    if (!s)
        return 0;
    while (*s) {
        char tok[32];
        size_t n = 0;
        while (*s && *s != ',') {
            if (!isspace((unsigned char)*s) && n + 1 < sizeof tok)
                tok[n++] = (char)tolower((unsigned char)*s);
            s++;
        }
        tok[n] = '\0';
        if (*s == ',')
            s++;
        if (strcmp(tok, "avx512") == 0)
            off |= VDB_CPU_AVX512;
        else if (strcmp(tok, "avx2") == 0)
            off |= VDB_CPU_AVX2;
        else if (strcmp(tok, "neon") == 0)
            off |= VDB_CPU_NEON;
        else if (strcmp(tok, "all") == 0)
            off |= VDB_CPU_AVX2 | VDB_CPU_AVX512 | VDB_CPU_NEON;
    }
    return off;
}

static void vdb_cpu_init(void)
{
    vdb_cpu_detected_mask = vdb_cpu_detect();
    unsigned en = vdb_cpu_detected_mask & ~vdb_cpu_env_disabled();
    atomic_store(&vdb_cpu_enabled_mask, en);
    vdb_distance_select(en);
    vdb_pq4_select(en);
    vdb_sq8_select(en);
}

unsigned vdb_cpu_detected(void)
{
    pthread_once(&vdb_cpu_once, vdb_cpu_init);
    return vdb_cpu_detected_mask;
}

unsigned vdb_cpu_enabled(void)
{
    pthread_once(&vdb_cpu_once, vdb_cpu_init);
    return atomic_load(&vdb_cpu_enabled_mask);
}

unsigned vdb_cpu_set_enabled(unsigned mask)
{
    pthread_once(&vdb_cpu_once, vdb_cpu_init);
    unsigned en = mask & vdb_cpu_detected_mask;
    atomic_store(&vdb_cpu_enabled_mask, en);
    vdb_distance_select(en);
    vdb_pq4_select(en);
    vdb_sq8_select(en);
    return en;
}

const char *vdb_cpu_kernel_name(void)
{
    unsigned en = vdb_cpu_enabled();
    if (en & VDB_CPU_AVX512)
        return "avx512";
    if (en & VDB_CPU_AVX2)
        return "avx2";
    if (en & VDB_CPU_NEON)
        return "neon";
    return "serial";
}
