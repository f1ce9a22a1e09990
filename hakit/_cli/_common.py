"""What every command shares: the security flags, and turning them into a `Security`."""

from __future__ import annotations

import argparse

from .._runtime._security import Security, TlsConfig

#: Exit statuses (``hakit --help`` lists them).
EXIT_OK = 0
EXIT_FAILED = 1  #: the node refused or failed the request
EXIT_USAGE = 2  #: bad arguments (argparse's own status)
EXIT_UNREACHABLE = 3  #: the node could not be reached, or did not answer in time
EXIT_REFUSED = 4  #: authentication or handshake refused
EXIT_INTERRUPTED = 130  #: Ctrl-C


class CliError(Exception):
    """An error the command line reports as one line, with an exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


def add_security_flags(parser: argparse.ArgumentParser, *, serving: bool) -> None:
    """The flags of the cluster secret and of TLS."""
    group = parser.add_argument_group("security")
    group.add_argument(
        "--secret-file",
        metavar="FILE",
        help="file holding the cluster secret (at least 16 bytes); every link proves it",
    )
    if serving:
        cert_help = "this node's TLS certificate (PEM): it listens with TLS and presents it"
        ca_help = (
            "CA that peers' certificates must chain to; with --tls-cert, peers that connect "
            "must present one too (mutual TLS)"
        )
    else:
        cert_help = "client certificate (PEM) for a node that requires one (mutual TLS)"
        ca_help = "CA the node's certificate must chain to (speak TLS to the node)"
    group.add_argument("--tls-cert", metavar="FILE", help=cert_help)
    group.add_argument(
        "--tls-key", metavar="FILE", help="private key of --tls-cert (default: in that file)"
    )
    group.add_argument("--tls-ca", metavar="FILE", help=ca_help)


def security_from(args: argparse.Namespace) -> Security:
    """The `Security` the flags ask for.

    Raises:
        CliError: a file is missing or invalid, or the secret is too short.
    """
    secret: bytes | None = None
    if args.secret_file:
        try:
            with open(args.secret_file, "rb") as file:
                secret = file.read()
        except OSError as exc:
            raise CliError(
                f"cannot read --secret-file {args.secret_file}: {exc.strerror}"
            ) from None
    tls: TlsConfig | None = None
    if args.tls_cert or args.tls_key or args.tls_ca:
        try:
            tls = TlsConfig.from_files(cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise CliError(f"bad TLS files: {exc}") from None
    try:
        return Security.make(secret, tls)
    except (TypeError, ValueError) as exc:
        raise CliError(f"--secret-file {args.secret_file}: {exc}") from None
