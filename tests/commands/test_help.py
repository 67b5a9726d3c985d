"""`--help` of the `lateint` command and its subcommands: whole sentences and every default."""

import pytest

from lateint_jax.cli import COMMANDS, main


def help_text(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_ends_its_sentences(capsys):
    text = " ".join(help_text(capsys).split())
    assert "Run `lateint COMMAND --help` for the options of a command." in text
    for name in COMMANDS:
        assert name in text


@pytest.mark.parametrize("command, option, default", [
    ("index", "--nbits", "(default: 2)"),
    ("index", "--kind", "(default: colbert)"),
    ("search", "-k", "(default: 10)"),
    ("mine", "--first-stage", "(default: bm25)"),
    ("teacher", "--batch-size", "(default: 32)"),
])  # fmt: skip
def test_subcommand_help_shows_defaults(capsys, command, option, default):
    text = " ".join(help_text(capsys, command).split())
    assert option in text and default in text, text
    assert text.count("(default: 10)") <= 1  # a default named in the help is not repeated
