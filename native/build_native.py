"""cffi builder for memguard._native (API mode, out of line, compiled at install).

Every constant and struct layout below is `...`: the C compiler fills it in
from the system headers, so nothing is hand-typed. Syscalls that glibc does not
wrap (pidfd_open, pidfd_send_signal, process_mrelease) go through syscall(2)
with the numbers from <sys/syscall.h>; when the headers lack a number the
wrapper fails with ENOSYS instead of failing the build. A flag the headers may
lack (MCL_ONFAULT, Linux 4.4) is 0 then, which callers read as "not available".
"""

from cffi import FFI

CDEF = """
#define EFD_CLOEXEC ...
#define EFD_NONBLOCK ...
int eventfd(unsigned int initval, int flags);

#define IN_CLOEXEC ...
#define IN_NONBLOCK ...
#define IN_ACCESS ...
#define IN_MODIFY ...
#define IN_ATTRIB ...
#define IN_CLOSE_WRITE ...
#define IN_CLOSE_NOWRITE ...
#define IN_OPEN ...
#define IN_MOVED_FROM ...
#define IN_MOVED_TO ...
#define IN_CREATE ...
#define IN_DELETE ...
#define IN_DELETE_SELF ...
#define IN_MOVE_SELF ...
#define IN_UNMOUNT ...
#define IN_Q_OVERFLOW ...
#define IN_IGNORED ...
#define IN_ONLYDIR ...
#define IN_DONT_FOLLOW ...
#define IN_EXCL_UNLINK ...
#define IN_MASK_ADD ...
#define IN_ISDIR ...
#define NAME_MAX ...
struct inotify_event {
    int wd;
    uint32_t mask;
    uint32_t cookie;
    uint32_t len;
    char name[];
};
int inotify_init1(int flags);
int inotify_add_watch(int fd, const char *pathname, uint32_t mask);
int inotify_rm_watch(int fd, int wd);

#define CGROUP_SUPER_MAGIC ...
#define CGROUP2_SUPER_MAGIC ...
#define TMPFS_MAGIC ...
struct statfs { long f_type; ...; };
int statfs(const char *path, struct statfs *buf);

#define PIDFD_NONBLOCK ...
static const int MEMGUARD_HAVE_PIDFD_OPEN;
static const int MEMGUARD_HAVE_PIDFD_SEND_SIGNAL;
static const int MEMGUARD_HAVE_PROCESS_MRELEASE;
int memguard_pidfd_open(int pid, unsigned int flags);
int memguard_pidfd_send_signal(int pidfd, int sig, unsigned int flags);
int memguard_process_mrelease(int pidfd, unsigned int flags);

#define MCL_CURRENT ...
#define MCL_FUTURE ...
static const int MEMGUARD_MCL_ONFAULT;
int mlockall(int flags);
"""

SOURCE = """
#include <errno.h>
#include <linux/magic.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>
#include <limits.h>
#include <fcntl.h>

#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK O_NONBLOCK
#endif

#ifdef SYS_pidfd_open
static const int MEMGUARD_HAVE_PIDFD_OPEN = 1;
static int memguard_pidfd_open(int pid, unsigned int flags)
{ return (int)syscall(SYS_pidfd_open, pid, flags); }
#else
static const int MEMGUARD_HAVE_PIDFD_OPEN = 0;
static int memguard_pidfd_open(int pid, unsigned int flags)
{ (void)pid; (void)flags; errno = ENOSYS; return -1; }
#endif

#ifdef SYS_pidfd_send_signal
static const int MEMGUARD_HAVE_PIDFD_SEND_SIGNAL = 1;
static int memguard_pidfd_send_signal(int pidfd, int sig, unsigned int flags)
{ return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, flags); }
#else
static const int MEMGUARD_HAVE_PIDFD_SEND_SIGNAL = 0;
static int memguard_pidfd_send_signal(int pidfd, int sig, unsigned int flags)
{ (void)pidfd; (void)sig; (void)flags; errno = ENOSYS; return -1; }
#endif

#ifdef SYS_process_mrelease
static const int MEMGUARD_HAVE_PROCESS_MRELEASE = 1;
static int memguard_process_mrelease(int pidfd, unsigned int flags)
{ return (int)syscall(SYS_process_mrelease, pidfd, flags); }
#else
static const int MEMGUARD_HAVE_PROCESS_MRELEASE = 0;
static int memguard_process_mrelease(int pidfd, unsigned int flags)
{ (void)pidfd; (void)flags; errno = ENOSYS; return -1; }
#endif

#ifdef MCL_ONFAULT
static const int MEMGUARD_MCL_ONFAULT = MCL_ONFAULT;
#else
static const int MEMGUARD_MCL_ONFAULT = 0;
#endif
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source("memguard._native", SOURCE)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
