"""The package as pip installs it: importable from site-packages with its
py.typed, its version its protocol's; and what it exports."""

from __future__ import annotations

import os
import unittest
from importlib import metadata
from pathlib import Path

import liminald

from harness import REPO


class PackageTest(unittest.TestCase):

    @unittest.skipUnless(os.environ.get("LIMINALD_CLIENT_INSTALLED"),
                         "set LIMINALD_CLIENT_INSTALLED=1 where the package was pip-installed")
    def test_installed_not_the_source_tree(self):
        here = Path(liminald.__file__).resolve().parent
        source = (REPO / "clients" / "python" / "src" / "liminald").resolve()
        self.assertNotEqual(here, source, "the tests import the source tree, not the package")
        self.assertIn("site-packages", here.parts)
        self.assertTrue((here / "py.typed").is_file(), "py.typed was not installed")
        self.assertEqual(metadata.version("liminald"), liminald.__version__)

    def test_version_is_the_protocol(self):
        self.assertEqual(int(liminald.__version__.split(".")[0]), liminald.PROTOCOL)
        self.assertEqual(liminald.PROTOCOL, 2)

    def test_exports(self):
        for name in liminald.__all__:
            self.assertTrue(hasattr(liminald, name), name)
        self.assertIs(liminald.Error, liminald.LiminalError)

    def test_retry_rules(self):
        safe = liminald.retry_safe
        for op in ("hello", "ping", "decide", "state", "read", "messages", "explain",
                   "conversations", "stats"):
            self.assertTrue(safe(op, {}), op)
        for op in ("receive", "start", "step", "finish", "fail", "renew", "release"):
            self.assertFalse(safe(op, {}), op)
            self.assertTrue(safe(op, {"expected_seq": 3}), op)
        for op in ("step", "finish", "fail"):
            self.assertTrue(safe(op, {"token": 4}), op)
        for op in ("receive", "start", "renew", "release"):
            self.assertFalse(safe(op, {"token": 4}), op)
        self.assertFalse(safe("unsubscribe", {"sub": 1}))
        self.assertFalse(safe("frobnicate", {}))


if __name__ == "__main__":
    unittest.main()
