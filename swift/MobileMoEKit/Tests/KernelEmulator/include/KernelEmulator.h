// C interface of the kernel emulator (tests only): runs MobileMoEKit's GPU kernels on the CPU.
#ifndef MOBILEMOE_KERNEL_EMULATOR_H
#define MOBILEMOE_KERNEL_EMULATOR_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/// Runs kernel `name` (a Metal entry point of MobileMoEKit) on `groups` threadgroups of 256
/// emulated threads. `buffers`: the kernel's `count` buffer arguments in entry-point order
/// (dims and fp included). Returns 0, or -1 when the name is unknown.
int mme_launch(const char *name, void *const *buffers, int32_t count, int32_t groups);

#ifdef __cplusplus
}
#endif
#endif
