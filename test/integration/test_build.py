"""The build (Makefile): nothing the project's scripts leave under the build
directory can break `make`, and changing the compiler flags rebuilds every
object instead of mixing two builds in one directory."""
import os
import subprocess

import helpers


def make(*args, timeout=300):
    return subprocess.run(["make", "--no-print-directory"] + list(args), cwd=helpers.REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_stray_d_files_and_directories_do_not_break_make():
    """Directories and stray files named *.d under the build tree (nginx's
    conf.d-style directories of a stack, a tool's leftovers) are not
    included as dependency files."""
    build = helpers.tmpdir("build-")
    os.makedirs(os.path.join(build, "stack", "nginx", "internal-allow.d"))
    with open(os.path.join(build, "stray.d"), "w") as f:
        f.write("this is not a makefile: {\n")
    r = make("-n", "BUILD=" + build, build + "/broker")
    assert r.returncode == 0, r.stderr
    assert "internal-allow.d" not in r.stderr and "stray.d" not in r.stderr


def test_changed_flags_rebuild_every_object():
    build = helpers.tmpdir("build-")
    lib = build + "/libproto.a"
    r = make("BUILD=" + build, lib)
    assert r.returncode == 0, r.stderr
    objs = [l for l in r.stdout.splitlines() if " -c " in l]
    assert len(objs) >= 3, r.stdout
    # Same flags: up to date.
    assert make("-q", "BUILD=" + build, lib).returncode == 0
    # Other flags: every object again, recorded in the settings file.
    r = make("BUILD=" + build, "CFLAGS=-O1 -g", lib)
    assert r.returncode == 0, r.stderr
    again = [l for l in r.stdout.splitlines() if " -c " in l]
    assert len(again) == len(objs) and all(" -O1 -g " in l for l in again), r.stdout
    with open(os.path.join(build, ".make-settings")) as f:
        assert "-O1 -g" in f.read()
    # And back: rebuilt again, not taken from the other build.
    r = make("BUILD=" + build, lib)
    assert len([l for l in r.stdout.splitlines() if " -c " in l]) == len(objs)
