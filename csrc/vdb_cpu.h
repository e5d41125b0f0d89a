/* vdb_cpu — run-time CPU feature detection and the kernel dispatch switch.
 *
 * Contract: detection runs once (cpuid + XGETBV for the OS's register-state support on x86-64;
 * compile target on arm64). The enabled set starts as detected minus the features named in the
 * environment variable VECTORDB_DISABLE_CPU_FEATURES (comma-separated: "avx512,avx2" or "all").
 * vdb_cpu_set_enabled() changes it at run time (tests use it to exercise every variant); it must
 * not run concurrently with searches. Everything else is thread-safe.
 */
#ifndef VDB_CPU_H
#define VDB_CPU_H

enum {
    VDB_CPU_AVX2 = 1u << 0,   /* AVX2 + FMA, OS saves YMM */
    VDB_CPU_AVX512 = 1u << 1, /* AVX-512 F+BW+DQ+VL, OS saves ZMM/opmask */
    VDB_CPU_NEON = 1u << 2,   /* arm64 Advanced SIMD */
};

unsigned vdb_cpu_detected(void);
unsigned vdb_cpu_enabled(void);
/* Enables mask & detected, re-selects the kernels, returns the enabled set. */
unsigned vdb_cpu_set_enabled(unsigned mask);
/* Name of the kernel family in use: "avx512", "avx2", "neon" or "serial". */
const char *vdb_cpu_kernel_name(void);

#endif
