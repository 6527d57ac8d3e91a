"""Jinja templates of the Hub cards (stage model cards, dataset card, Space README): `render(name, **context)`.

Undefined variables raise (StrictUndefined); block tags take their own line (`trim_blocks`, `lstrip_blocks`); the
file's last newline is kept.
"""

import functools
from pathlib import Path

import jinja2


@functools.cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(template_name: str, **context) -> str:
    """The template `hub_cards/<template_name>` rendered with `context`."""
    return environment().get_template(template_name).render(**context)
