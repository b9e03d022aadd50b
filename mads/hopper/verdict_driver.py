# ruff: noqa: UP031 -- %-formatting is C code the guest cannot patch; str.format dispatches to __format__
"""Guest program of Hopper's test verdict: runs inside the sandbox cell, never on the host.

The verdict must not be forgeable by the code under test, which runs in the same interpreter. So:

1. Before any guest code is imported, an audit hook is installed. Its closure holds the only copy
   of the per-run key (as SHA-256 states, from ``/input/verdict.key``, which it then refuses to
   let anyone open again) and a one-time token it hands back to the driver. The hook function is
   referenced by the interpreter alone (hooks cannot be enumerated), and every way to reach it or
   any frame (``gc.get_objects``/``get_referrers``/``get_referents``, ``sys._getframe``,
   ``sys._current_frames``, ``tb_frame``/``gi_frame``/``cr_frame``/``ag_frame``, ``settrace``,
   ``setprofile``, executing the driver's own code again) is refused while the suite runs, so the
   token in the driver's frame is out of the guest's reach too.
2. The driver snapshots unittest's modules and classes, its own result class and the builtins,
   loads and runs the suite with its own result class, compares the snapshot at the end, and hands
   one report with the token to the hook (``sys.audit("hopper.verdict", token, report)``).
3. The hook signs the first report carrying the token (HMAC-SHA256 with the key), writes it
   straight to fd 1, and signs nothing else. Exiting early (``os._exit``) means no signed line;
   a line a guest prints itself does not verify.

The host accepts exactly one signed line carrying exactly one report, in which every expected
test (found by the host in the test source) passed and nothing was tampered with.
"""


def _install(key_path, marker):
    import os
    import sys

    from _sha2 import sha256

    with open(key_path, "rb") as handle:
        key = handle.read()
    key = key.ljust(64, b"\0")
    inner = sha256(bytes(b ^ 0x36 for b in key))
    outer = sha256(bytes(b ^ 0x5C for b in key))
    del key
    token = os.urandom(32).hex()
    signed_once = []
    write = os.write
    join = "".join
    main_code = sys._getframe(1).f_code
    install_code = sys._getframe(0).f_code
    blocked = frozenset(
        {
            "gc.get_objects",
            "gc.get_referrers",
            "gc.get_referents",
            "sys._getframe",
            "sys._current_frames",
            "sys._current_exceptions",
            "sys.settrace",
            "sys.setprofile",
            "sys.monitoring.register_callback",
        }
    )
    frame_attributes = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"})

    def hook(event, args):
        if event == "hopper.verdict":
            # Signed at once, once, and only for the holder of the token (the driver's frame, unreachable).
            if signed_once or len(args) != 2 or args[0] != token or type(args[1]) is not str:
                return
            signed_once.append(True)
            body = args[1]
            mac = inner.copy()
            mac.update(body.encode())
            signature = outer.copy()
            signature.update(mac.digest())
            write(1, join(["\n", marker, signature.hexdigest(), ":", body.encode().hex(), "\n"]).encode())
        elif event in blocked:
            raise RuntimeError(f"{event} is not available while tests run")
        elif event == "object.__getattr__" and args[1] in frame_attributes:
            raise RuntimeError(f"{args[1]} is not available while tests run")
        elif event == "open" and "verdict.key" in (args[0] if type(args[0]) is str else repr(args[0])):
            raise PermissionError("the verdict key is not readable")
        elif event in ("os.link", "os.symlink", "os.rename"):
            raise PermissionError(f"{event} is not available while tests run")
        elif event == "exec" and (args[0] is main_code or args[0] is install_code):
            raise RuntimeError("the test driver cannot be re-run")
        elif event == "import" and type(args[0]) is str and "interpreters" in args[0]:
            raise ImportError("subinterpreters are not available while tests run")

    sys.addaudithook(hook)
    return token


def _main():
    import builtins
    import sys
    import traceback
    import unittest
    import unittest.case
    import unittest.loader
    import unittest.result
    import unittest.runner
    import unittest.suite

    token = _install("/input/verdict.key", "@@hopper-verdict@@")
    audit = sys.audit
    sys.dont_write_bytecode = True
    sys.path.insert(0, "/input")
    # traceback.clear_frames (assertRaises) reads tb_frame; it only frees memory, so it becomes a no-op.
    traceback.clear_frames = lambda tb: None
    modules = (builtins, unittest, unittest.case, unittest.loader, unittest.result, unittest.runner, unittest.suite)
    ident = id
    length = len
    dict_items = dict.items
    values_of = vars

    def snapshot():
        taken = []
        for module in modules:
            namespace = values_of(module)
            taken.append((namespace, tuple((k, ident(v)) for k, v in dict_items(namespace))))
            for value in tuple(namespace.values()):
                if type(value) is type and getattr(value, "__module__", "").startswith("unittest"):
                    cls_ns = value.__dict__
                    taken.append((cls_ns, tuple((k, ident(v)) for k, v in cls_ns.items())))
        return taken

    def changed(taken):
        for namespace, items in taken:
            if length(namespace) != length(items):
                return True
            for k, v in items:
                if k not in namespace or ident(namespace[k]) != v:
                    return True
        return False

    class Result(unittest.result.TestResult):
        def __init__(self):
            super().__init__()
            self.passed = []
            self.tampered = False
            self.outcomes = []

        def _exc_info_to_string(self, err, test):
            kind, value, _ = err
            return f"{kind.__name__}: {value}"[:2000]

        def addSuccess(self, test):
            super().addSuccess(test)
            self.passed.append(test.id())

    taken = snapshot()
    taken.append((Result.__dict__, tuple((k, ident(v)) for k, v in Result.__dict__.items())))
    result = Result()
    loader = unittest.loader.TestLoader()
    load_error = ""
    try:
        module = __import__("test_solution")
        suite = unittest.suite.TestSuite()
        for value in list(vars(module).values()):
            if (
                type(value) is type
                and issubclass(value, unittest.case.TestCase)
                and value.__module__ == "test_solution"
            ):
                suite.addTests(loader.loadTestsFromTestCase(value))
        del sys.modules["test_solution"]
        suite.run(result)
    except BaseException as exc:  # the solution or the tests failed to import, or broke out of the suite
        load_error = f"{type(exc).__name__}: {exc}"[:2000]
    tampered = result.tampered or changed(taken)
    problems = [f"{t.id()}: {text}" for t, text in result.failures + result.errors][:50]
    report = "\x1f".join(
        [
            "run=%d" % result.testsRun,
            "failures=%d" % len(result.failures),
            "errors=%d" % len(result.errors),
            "skipped=%d" % len(result.skipped),
            "tampered=%d" % (1 if tampered else 0),
            "passed=" + ",".join(sorted(result.passed)),
            "load_error=" + load_error.replace("\x1f", " ").replace("\x1e", " "),
        ]
    )
    sys.stderr.write("\n".join(problems) + "\n")
    audit("hopper.verdict", token, report)


_main()
