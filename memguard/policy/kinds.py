"""The kinds of report memguard makes (pure: the step function decides most of them)."""

from __future__ import annotations

import enum


class ReportKind(enum.Enum):
    """The kind of report; the value is the Kubernetes Event reason."""

    FLUSH = "OomGuardFlush"  # a flush brought usage under the threshold
    SKIP = "OomGuardSkip"  # over threshold, but mostly cache: left to the kernel
    KILL_PROCESS = "OomGuardKillProcess"
    KILL_CONTAINER = "OomGuardKillContainer"  # ("escalated": after a graceful try)
    TERMINATE = "OomGuardTerminate"  # graceful: SIGTERM to the main process, and how it ended
    EVICT = "OomGuardEvict"  # the pod evicted (graceful --graceful-via evict, policy evict)
    DELETE = "OomGuardDelete"  # the pod deleted (graceful --graceful-via delete)
    PROTECTED = "OomGuardProtected"  # would act, but the pod is protected: reported only
    NOOP = "OomGuardNoop"  # over threshold after flush, policy noop: reported only
    NO_VICTIM = "OomGuardNoVictim"  # over threshold, nothing memguard may kill
    KERNEL_OOM = "CgroupOOM"  # the kernel's OOM killer acted in this cgroup
    QOS_APPLIED = "OomGuardMemoryQoS"  # memory QoS settings written
    QOS_INVALID = "OomGuardMemoryQoSInvalid"  # bad annotation or refused value: nothing written
    QOS_UNSUPPORTED = "OomGuardMemoryQoSUnsupported"  # cgroup v1: no equivalent settings
    PARENT_MISSING = "OomGuardParentMissing"  # --parent missing for --parent-wait: nothing guarded
    BAD_ANNOTATION = "OomGuardBadAnnotation"  # a memguard.io annotation not used (next level)
