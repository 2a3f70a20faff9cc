"""`podssh completion bash|zsh`: scripts generated from the parser that the shells accept and
that complete the subcommands, the serve flags and the choices."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from sshoperator.cli import build_parser, main
from sshoperator.completion import script

from tests.support.cliparser import subcommands


def serve_flags() -> list[str]:
    serve = subcommands(build_parser())["serve"]
    return [s for a in serve._actions for s in a.option_strings if s.startswith("--") and s != "--help"]


def printed(shell: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["completion", shell]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_the_script_names_every_subcommand_and_serve_flag(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = printed(shell, capsys)
    assert text.endswith("\n") and not text.endswith("\n\n")
    names = list(subcommands(build_parser()))
    assert {"serve", "grant", "ssh-config", "known-hosts", "host-cert", "operator", "completion"} <= set(names)
    for name in names:
        assert name in text, f"{shell}: subcommand {name} missing"
    flags = serve_flags()
    assert "--max-startups" in flags and "--no-pod-cache" in flags
    for flag in flags:
        assert flag in text, f"{shell}: serve flag {flag} missing"


def test_bash_accepts_the_script_and_completes_with_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "podssh.bash"
    path.write_text(printed("bash", capsys))
    subprocess.run(["bash", "-n", str(path)], check=True)
    drive = f"""
source {path}
complete_words() {{ COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=(); _shtab_podssh;
  printf '%s ' "${{COMPREPLY[@]}}"; echo; }}
complete -p podssh
complete_words podssh comp
complete_words podssh serve --max-st
complete_words podssh serve --log-level ''
"""
    out = subprocess.run(["bash", "-c", drive], check=True, capture_output=True, text=True).stdout.splitlines()
    assert "_shtab_podssh podssh" in out[0]
    assert out[1].split() == ["completion"]
    assert out[2].split() == ["--max-startups"]
    assert sorted(out[3].split()) == ["debug", "error", "info", "warning"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_accepts_the_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "_podssh"
    path.write_text(printed("zsh", capsys))
    subprocess.run(["zsh", "-n", str(path)], check=True)


def test_zsh_specs_escape_the_colons_of_metavars() -> None:
    """Unescaped, HOST:PORT makes zsh run `PORT` as the completion action ("command not found")."""
    text = script(build_parser(), "zsh")
    assert r'"--listen[' in text and r":HOST\:PORT:" in text
    assert ":HOST:PORT:" not in text and ":START:RATE:FULL:" not in text


def test_path_options_complete_file_and_directory_names() -> None:
    bash = script(build_parser(), "bash")
    assert "_shtab_podssh_serve___access_COMPGEN=_shtab_compgen_files" in bash
    assert "_shtab_podssh_serve___host_key_dir_COMPGEN=_shtab_compgen_dirs" in bash
    assert "_shtab_podssh_serve___kubeconfig_COMPGEN=_shtab_compgen_files" in bash
    assert "_shtab_podssh_grant___key_COMPGEN=_shtab_compgen_files" in bash


def test_an_unknown_shell_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["completion", "fish"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'fish'" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="choose one of bash, zsh"):
        script(build_parser(), "fish")
