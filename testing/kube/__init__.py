"""The Kubernetes API-server emulator (kmock plus the rules it lacks); NOTES.md."""
