"""The command line's client-authentication options: --requirepass-file,
--users-file and --protected-mode are validated with messages a user
understands, and never show a secret."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from distkv.tap import Options, makeService


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class AuthOptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()

    def file(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        return str(path)

    def refused(self, *argv: str) -> str:
        with self.assertRaises(usage.UsageError) as caught:
            parse(*argv)
        return str(caught.exception)

    def test_defaults_require_no_password_and_protect(self) -> None:
        """Without the options no password is required and protected mode is on."""
        options = parse()
        self.assertIsNone(options["users"])
        self.assertEqual(options["protected-mode"], "yes")

    def test_requirepass_file_first_line_is_the_default_password(self) -> None:
        """The first line, its CR LF or LF stripped, is the default user's password;
        spaces inside it are kept and later lines are ignored."""
        for data in (b"s3cret pass\r\nignored\n", b"s3cret pass\n", b"s3cret pass"):
            options = parse("--requirepass-file", self.file("pw", data))
            default = options["users"][b"default"]
            self.assertEqual(default.digest, hashlib.sha256(b"s3cret pass").digest())
            self.assertTrue(default.can_write)

    def test_missing_unreadable_or_empty_password_files_are_refused(self) -> None:
        """A password file that is missing, a directory, empty or with an empty first
        line is a usage error naming the option and the file."""
        missing = str(self.dir / "nope")
        self.assertIn(f"--requirepass-file {missing}: cannot read it",
                      self.refused("--requirepass-file", missing))
        self.assertIn("cannot read it", self.refused("--requirepass-file", str(self.dir)))
        for data in (b"", b"\n", b"\r\nsecret-on-line-2\n"):
            message = self.refused("--requirepass-file", self.file("empty", data))
            self.assertIn("first line is empty", message)
            self.assertNotIn("secret-on-line-2", message)
        if os.geteuid() != 0:  # root reads any file
            locked = self.file("locked", b"pw\n")
            os.chmod(locked, 0)
            self.assertIn("cannot read it", self.refused("--requirepass-file", locked))

    def test_users_file_errors_name_the_file_and_line(self) -> None:
        """A bad users file is a usage error with the file, the line and what is wrong."""
        path = self.file("users", b"# users\nreader read >pw\nwriter write >pw2\n")
        self.assertEqual(
            self.refused("--users-file", path),
            f"--users-file {path}: line 3: unknown rights 'write': use read or readwrite",
        )
        self.assertIn("cannot read it", self.refused("--users-file", str(self.dir / "nope")))

    def test_users_file_alone_and_combined_with_requirepass(self) -> None:
        """Either option alone, or both (the default user from one, the others from
        the users file); the default user set by both is refused without showing
        either password."""
        users = self.file("users", b"dash read >dash-pw\n")
        alone = parse("--users-file", users)["users"]
        self.assertEqual(sorted(alone), [b"dash"])
        password = self.file("pw", b"top-secret\n")
        both = parse("--users-file", users, "--requirepass-file", password)["users"]
        self.assertEqual(sorted(both), [b"dash", b"default"])
        clash = self.file("clash", b"default read >other-secret\n")
        message = self.refused("--users-file", clash, "--requirepass-file", password)
        self.assertIn("lists the default user, whose password --requirepass-file sets too",
                      message)
        self.assertNotIn("secret", message.replace(clash, ""))

    def test_protected_mode_takes_yes_or_no(self) -> None:
        self.assertEqual(parse("--protected-mode", "no")["protected-mode"], "no")
        self.assertIn("--protected-mode 'maybe': use yes or no",
                      self.refused("--protected-mode", "maybe"))

    def test_make_service_gives_the_node_its_users_and_protected_mode(self) -> None:
        """makeService wires the users and protected mode into the node; the
        password is nowhere in the node's CONFIG settings."""
        password = self.file("pw", b"wired-secret\n")
        service = makeService(parse("--requirepass-file", password, "--port", "0"))
        node = service.node  # type: ignore[attr-defined]
        self.assertTrue(node.dispatcher.accounts.required)
        self.assertTrue(node.protected_mode)
        self.assertEqual(node.dispatcher.config[b"protected-mode"], b"yes")
        self.assertFalse(any(b"wired-secret" in value for value in node.dispatcher.config.values()))
        service = makeService(parse("--protected-mode", "no", "--port", "0"))
        node = service.node  # type: ignore[attr-defined]
        self.assertFalse(node.dispatcher.accounts.required)
        self.assertFalse(node.protected_mode)
