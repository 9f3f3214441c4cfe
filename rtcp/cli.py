"""The `rtcp` command line: a thin typer app that registers each command from its own module."""

from __future__ import annotations

import sys

import typer

from rtcp import __version__
from rtcp.errors import ExitCode, RtcpError

app = typer.Typer(
    name="rtcp",
    help=(
        "Move files intact over an unreliable datagram network with a user-space TCP over UDP."
        "\n\nExit codes: 0 ok (send: verified by the receiver), 1 internal error, 2 usage,"
        " 3 timeout, 4 reset by the peer, 5 SHA-256 mismatch, 6 file exists on the receiver,"
        " 7 local file or socket error, 8 refused by the receiver, 9 the keys do not match,"
        " 130 interrupted."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rtcp {__version__}")
        raise typer.Exit(ExitCode.OK)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """rtcp: recv, proxy and send. Exit codes: see `rtcp send --help`."""


def _plain_help_types() -> None:
    """Help pages without typer's type column (`<bool>`, `<str>`, `<list[Path]>`): a flag takes
    no value, an argument is named by its metavar already, an option shows its metavar (FILE,
    HOST:PORT, D). Typer (0.16+) has no switch for this; older versions lack the method."""
    from typer import core

    def option_type(self, ctx):
        if self.is_flag or self.count:
            return None
        return self.metavar if self.metavar is not None else original_option(self, ctx)

    def argument_type(self, ctx):
        return None

    original_option = getattr(core.TyperOption, "display_type_rich", None)
    if original_option is not None:
        core.TyperOption.display_type_rich = option_type
    if getattr(core.TyperArgument, "display_type_rich", None) is not None:
        core.TyperArgument.display_type_rich = argument_type


def _plain_string_values() -> None:
    """Option values kept as the strings click read, without pydantic.

    Typer 0.2x coerces every value through a pydantic TypeAdapter built on first use: importing
    pydantic and building the adapters costs about 0.1 s of CPU at each start, more than all of
    rtcp's own modules. Every value option of send, recv, proxy, ctl, keygen and bench is a
    string that rtcp.units parses, and every other one a flag: a `str` or `list[str]` value
    stays the string(s) click read, a flag's bool stays a bool. Anything else (the paths of
    explain, plot and decrypt) keeps typer's coercion. Typers without this layer: nothing to do.
    """
    from typer import core

    try:
        from typer._coercion import RuntimeParam, build_runtime_param
    except ImportError:
        return
    parameter = getattr(core, "_TyperParameter", None)
    original = getattr(parameter, "get_runtime_param", None)
    if original is None:
        return

    class PlainStrings(RuntimeParam):
        def _coerce_value(self, value, param, ctx):
            if self.annotation is str or self.annotation is bool:
                if isinstance(value, self.annotation):
                    return value
            elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                return list(value)
            return build_runtime_param(param.type_descriptor)._coerce_value(value, param, ctx)

    def get_runtime_param(self):
        descriptor = getattr(self, "type_descriptor", None)
        if (
            getattr(self, "_runtime_param", None) is None
            and descriptor is not None
            and descriptor.annotation in (str, bool, list[str])
            and descriptor.parameter_info.parser is None
        ):
            self._runtime_param = PlainStrings(
                parameter_info=descriptor.parameter_info, annotation=descriptor.annotation
            )
        return original(self)

    parameter.get_runtime_param = get_runtime_param


def _register() -> None:
    _plain_help_types()
    _plain_string_values()
    from rtcp.proxy.command import proxy_command

    app.command("proxy")(proxy_command)

    from rtcp.proxy.ctl import ctl_command

    app.command(
        "ctl", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )(ctl_command)

    from rtcp.transfer.command import recv_command, send_command

    app.command("send")(send_command)
    app.command("recv")(recv_command)

    from rtcp.transfer.keys import keygen_command

    app.command("keygen")(keygen_command)

    from rtcp.trace.decrypt import decrypt_command

    app.command("decrypt")(decrypt_command)

    from rtcp.bench.command import bench_command

    app.command("bench")(bench_command)

    from rtcp.trace.command import explain_command, plot_command

    app.command("explain")(explain_command)
    app.command("plot")(plot_command)


# Another name for a command: `rtcp proxy ctl URL ...` is `rtcp ctl URL ...` (#17 names both;
# `rtcp proxy` takes no positional argument, so "ctl" after it can mean nothing else).
ALIASES = {("proxy", "ctl"): ("ctl",)}


def expand_aliases(args: list[str]) -> list[str]:
    """args with a leading alias (ALIASES) replaced by the command it names."""
    for alias, command in ALIASES.items():
        if tuple(args[: len(alias)]) == alias:
            return [*command, *args[len(alias) :]]
    return args


def main() -> None:
    """Console entry point: every RtcpError becomes one line on stderr and its exit code."""
    _register()
    try:
        app(args=expand_aliases(sys.argv[1:]))
    except RtcpError as exc:
        print(f"rtcp: error: {exc}", file=sys.stderr)
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        print("rtcp: interrupted", file=sys.stderr)
        sys.exit(int(ExitCode.INTERRUPTED))
