"""One-sentence config errors: what jsonargparse reports as a nested Union report, said plainly.

``python train.py --config X --model.init_args.generator.init_args.widht=3`` ends with

    error: model.init_args.generator.init_args.widht is not a key of lit_gan.nets.MLPGenerator: expected one
    of latent_dim, output_shape, width, depth, batch_norm, output_activation (did you mean width?)

instead of the full usage text and jsonargparse's report on every Union subtype.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import sys

from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LightningArgumentParser


def constructor_keys(cls: type) -> list[str]:
    """The init arguments a config may set for ``cls`` (a parent's too where the child forwards ``**kwargs``)."""
    keys: list[str] = []
    for klass in cls.__mro__:
        if klass is object:
            break
        parameters = inspect.signature(klass.__init__).parameters.values()
        keys += [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                 and p.name != "self" and p.name not in keys]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return keys


def _import(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _describe(type_text: str) -> str:
    literal = re.fullmatch(r"typing\.Literal\[(.*)\]", type_text)
    if literal:
        return f"one of {literal.group(1)}"
    simple = re.fullmatch(r"<class '(\w+)'>", type_text)
    if simple:
        return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}.get(
            simple.group(1), simple.group(1))
    return type_text


def concise(message: str) -> str:
    """The sentence to show for a jsonargparse error ``message`` (the message itself when no rule applies)."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    classes = re.findall(r"Problem with given class_path '([^']+)'", message)
    if not keys:
        return message
    dotted = keys[0] + "".join(f".init_args.{key}" for key in keys[1:])
    option = re.search(r"Option '([^']+)' is not accepted", message)
    if option and classes:
        bad, cls = option.group(1), classes[-1]
        try:
            accepted = constructor_keys(_import(cls))
        except Exception:
            return f"{dotted}.init_args.{bad} is not a key of {cls}"
        return (f"{dotted}.init_args.{bad} is not a key of {cls}: expected one of {', '.join(accepted)}"
                + _did_you_mean(bad, accepted))
    wrong = re.search(r"Expected a (.+?)\. Got value: (.*)", message)
    if wrong:
        return f"{dotted}={wrong.group(2).strip()} is not valid: expected {_describe(wrong.group(1))}"
    missing = re.search(r"module '([\w.]+)' has no attribute '(\w+)'", message)
    if missing and classes:
        module, name = missing.groups()
        options = [n for n in dir(importlib.import_module(module)) if not n.startswith("_")]
        return (f"{dotted}={classes[-1]} is not valid: expected a class that exists ({module} has no {name})"
                + _did_you_mean(name, options))
    no_module = re.search(r"No module named '([\w.]+)'", message)
    if no_module and classes:
        return f"{dotted}={classes[-1]} is not valid: expected an importable class path (no module {no_module.group(1)})"
    return message


class ConciseParser(LightningArgumentParser):
    """LightningCLI's parser, but a config mistake ends in one sentence, not the usage and a Union report."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return ArgumentParser.error(self, message, ex)
        sys.stderr.write(f"error: {concise(message)}\n"
                         f"tip: {self.prog} --config X --print_config shows every key of a config; --help lists them\n")
        self.exit(2)
