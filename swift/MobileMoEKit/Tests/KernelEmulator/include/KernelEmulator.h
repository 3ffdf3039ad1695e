// C interface of the kernel emulator (tests only): runs MobileMoEKit's GPU kernels on the CPU.
#ifndef MOBILEMOE_KERNEL_EMULATOR_H
#define MOBILEMOE_KERNEL_EMULATOR_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/// Runs kernel `name` (a Metal entry point name of MobileMoEKit) on `groups` threadgroups of
/// 256 emulated threads. `buffers` are the kernel's buffer arguments in entry-point order
/// before dims/fp. Returns 0, or -1 when the name is unknown.
int mme_launch(const char *name, void *const *buffers, int32_t count, const int32_t *dims,
               const float *fp, int32_t groups);

#ifdef __cplusplus
}
#endif
#endif
