"""Reading what a killed child process printed, for the kill -9 tests.

``subprocess.Popen.communicate`` reads the pipes with ``os.read`` on their file descriptors,
so whatever an earlier ``proc.stdout.readline()`` had already pulled into the file object's
buffer (the child may have printed more than the line asked for) is silently skipped, and the
output seems to start mid-line. After a SIGKILL the child writes nothing more, so reading the
file objects to the end cannot block on a full pipe."""


def output_after_kill(proc, timeout_s=10):
    """``(stdout, stderr)`` of ``proc`` (already sent SIGKILL), including what an earlier
    ``readline`` buffered; waits for it to exit (at most ``timeout_s`` seconds)."""
    out = proc.stdout.read()
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    proc.wait(timeout=timeout_s)
    return out, err
