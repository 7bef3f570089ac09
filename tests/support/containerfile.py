"""The Containerfile read as data: enough of the Dockerfile grammar for ours (continuations, comments, ARG
before FROM, stages), so tests can hold it to its invariants and compare it with the image it built."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.procs import ROOT

CONTAINERFILE = ROOT / "Containerfile"


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Containerfile:
    global_args: dict[str, str]
    stages: list[Stage]
    comments: dict[int, str]  # line number -> comment text

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def resolve(
        self, text: str, stage: Stage | None = None, build_args: Mapping[str, str] | None = None
    ) -> str:
        """``text`` with its ``${ARG}`` references replaced by defaults (or ``build_args``), repeatedly, so
        an ARG whose default names another ARG resolves too."""
        values = dict(self.global_args)
        if stage is not None:
            for arg in stage.all("ARG"):
                name, _, default = arg.args.partition("=")
                if default:
                    values[name] = default
        values.update(build_args or {})
        for _ in range(5):
            text = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m[1] or m[2], m[0]), text)
        return text


def parse(path: Path) -> Containerfile:
    """Enough of the Dockerfile grammar for this file: continuations, comments, ARG before FROM, stages."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    comments: dict[int, str] = {}
    lines = path.read_text().splitlines()
    number = 0
    while number < len(lines):
        start = number
        text = lines[number].strip()
        number += 1
        if not text:
            continue
        if text.startswith("#"):
            comments[start + 1] = text
            continue
        while text.endswith("\\") and number < len(lines):
            following = lines[number].strip()
            number += 1
            text = text[:-1].rstrip() + (" " + following if not following.startswith("#") else "")
        keyword, _, args = text.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), start + 1)
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(words[0], name))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {start + 1}: only ARG may precede FROM"
            name, _, default = instruction.args.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append(instruction)
    return Containerfile(global_args, stages, comments)


def env_of(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.args):
            key, _, value = word.partition("=")
            values[key] = value
    return values
