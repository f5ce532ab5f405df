"""What every `python -m unet_tf.<command>` shares: its parser is built from its module docstring
(first paragraph: the description; the rest, commands that run as written: the epilog)."""

import argparse


def command_parser(module: str, doc: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"python -m {module}", description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc.split("\n", 2)[2])
