# The one build description of the C core, read by csrc/Makefile (include) and by the cffi
# build (build_cffi.py). Keep it to plain `NAME = words` lines: both readers parse only that.

# The core: every source of libmmiofilter and of mmiofilter._core.
MF_SOURCES = table.c layout.c access.c access_mmio.c backend.c errors.c events.c hazard.c filter.c version.c guard.c guard_fsp.c guard_fsp_emem.c guard_fsp_queue.c

# The KVM embedding (mmiofilter_kvm.h): built only on Linux with <linux/kvm.h>.
MF_KVM_SOURCES = kvm.c

# Language level and warnings, for every compiler and every build of these sources.
MF_STD = -std=c11 -D_POSIX_C_SOURCE=200809L
MF_WARNINGS = -Wall -Wextra -Wshadow -Wstrict-prototypes

# What a program linking the core needs besides the library.
MF_LIBS = -lpthread
