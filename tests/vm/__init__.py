"""Run commands in a throwaway cgroup v2 VM (virtme-ng under QEMU TCG); see NOTES.md."""
