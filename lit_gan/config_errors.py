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
from itertools import takewhile

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
    # In lower case: lr_D is lr_d mistyped, which difflib would otherwise tie with lr_g and give in sort order.
    lower = {option.lower(): option for option in options}
    close = difflib.get_close_matches(word.lower(), list(lower), n=1)
    return f" (did you mean {lower[close[0]]}?)" if close else ""


WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "NoneType": "null",
         "tuple": "a list, e.g. [a, b]", "list": "a list, e.g. [a, b]",
         # jsonargparse.typing's constrained numbers
         "PositiveInt": "an integer >= 1", "NonNegativeInt": "an integer >= 0", "PositiveFloat": "a number > 0",
         "NonNegativeFloat": "a number >= 0", "ClosedUnitInterval": "a number from 0 to 1",
         "OpenUnitInterval": "a number between 0 and 1, exclusive"}


LITERAL = re.compile(r"typing\.Literal\[(.*)\]")


def _words(type_text: str) -> str | None:
    """A type as jsonargparse prints it, in plain words; None for one without a rule."""
    literal = LITERAL.fullmatch(type_text)
    if literal:
        return f"one of {literal.group(1)}"
    name = re.fullmatch(r"<class '(?:builtins\.|jsonargparse\.typing\.)?(\w+)'>", type_text)
    return WORDS.get(name.group(1)) if name else None


def _describe(type_text: str) -> str:
    simple = re.fullmatch(r"<class '(\w+)'>", type_text)
    return _words(type_text) or (simple.group(1) if simple else type_text)


def _either(subtypes: list[str]) -> str | None:
    """A Union's subtypes in plain words ('a number or null'); None where one has no rule."""
    values = [m.group(1) for m in map(LITERAL.fullmatch, subtypes) if m]
    words = [_words(t) for t in subtypes if not LITERAL.fullmatch(t)]
    if values:  # trainer.precision's three Literals read as one list of values
        words.insert(0, "one of " + ", ".join(values))
    if None in words:
        return None
    if "a number" in words and "an integer" in words:  # Union[float, int]: a number covers it
        words.remove("an integer")
    return " or ".join(words)


def _innermost(message: str) -> str:
    """The report on the most deeply nested key: the lines indented under its ``Parser key "..."``."""
    lines = message.splitlines()
    start = max((i for i, line in enumerate(lines) if 'Parser key "' in line), default=None)
    if start is None:
        return ""
    indent = len(lines[start]) - len(lines[start].lstrip())
    return "\n".join(takewhile(lambda line: not line.strip() or len(line) - len(line.lstrip()) > indent,
                                lines[start + 1:]))


def nested_keys(message: str) -> list[str]:
    """The keys of the first error's path, outermost first: each deeper than the last. A key repeated at one
    depth is another branch's report of the same problem (a logger is tried as one and as a list of them)."""
    keys, depth = [], -1
    for line in message.splitlines():
        found = re.search(r'Parser key "([^"]+)"', line)
        if found and len(line) - len(line.lstrip()) > depth:
            keys.append(found.group(1))
            depth = len(line) - len(line.lstrip())
    return keys


def concise(message: str) -> str:
    """The sentence to show for a jsonargparse error ``message`` (the message itself when no rule applies)."""
    keys = nested_keys(message)
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
    path = re.search(r"Unexpected import path format: (.*)", message)
    if path and re.search(r"[/\\]|\.(ya?ml|json)$", path.group(1).strip()):  # a misspelt file of a block
        return f"{dotted}={path.group(1).strip()} is not valid: expected an existing config file or a class path"
    report = _innermost(message)
    subtypes = re.search(r"^\s*Subtypes: [\[(](.*)[\])]$", report, re.M)
    given = re.search(r"^\s*Given value: (.*)$", report, re.M)
    # A type inside a Literal[...] may hold commas of its own.
    accepted = subtypes and _either(re.findall(r"typing\.\w+\[[^\]]*\]|<class '[^']+'>|[^,\s]+", subtypes.group(1)))
    if accepted and given:
        return f"{dotted}={given.group(1).strip()} is not valid: expected {accepted}"
    # The value precedes the restriction, or ends int()'s or float()'s error in quotes.
    constrained = re.match(r"\s*Not of type (\w+): (?:(.*) does not conform to restriction|.*: '(.*)'$)", report, re.M)
    if constrained and constrained.group(1) in WORDS:
        value = constrained.group(2) if constrained.group(2) is not None else constrained.group(3)
        return f"{dotted}={value} is not valid: expected {WORDS[constrained.group(1)]}"
    return message


class ConciseParser(LightningArgumentParser):
    """LightningCLI's parser, but a config mistake ends in one sentence, not the usage and a Union report.

    Abbreviated options are refused: ``--generator=5`` must not quietly become ``--generator_steps=5``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def parse_args(self, args=None, *rest, **kwargs):
        if args is None or isinstance(args, (list, tuple)):
            # W&B's sweep agent writes a null value as Python's None, which jsonargparse would take for the text
            # "None" (refused as a number, a folder named None for a path): it means null.
            args = [re.sub(r"^(--[\w.]+)=None$", r"\1=null", str(token)) for token in
                    (sys.argv[1:] if args is None else args)]
        for token in args if isinstance(args, list) else ():
            indexed = re.fullmatch(r"--(([\w.]+?)\.\d+(?:\.[\w.]+)?)(?:=(.*))?", str(token), re.S)
            if indexed:  # jsonargparse turns betas_d.0=0.1 into betas_d=[0.0, 0.1], and fails on list items
                key, name, value = indexed.groups()
                self.error(f"{key}={value if value is not None else '...'} is not valid: expected the whole list, not "
                           f"one item by its index (--{name}='[...]' as --print_config shows it), or an item to append "
                           f"(--{name}+=ITEM)")
        return super().parse_args(args, *rest, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return ArgumentParser.error(self, message, ex)
        sys.stderr.write(f"error: {concise(message)}\n"
                         f"tip: {self.prog} --config X --print_config shows every key of a config; --help lists them\n")
        self.exit(2)
