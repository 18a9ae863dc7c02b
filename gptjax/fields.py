"""How a run config's field is declared: its type, its range or choices, and whether it may change
when a run resumes; and how a config saved by older code reads today (upgrade).
gptjax/configuration.py declares the shared sections' fields; each architecture's record
(gptjax/models/) declares those of its own section.
"""

import dataclasses
import json
import math

from gptjax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Field:
  kind: type  # int, float, bool or str
  low: float | None = None  # the smallest value allowed
  below: float | None = None  # values must be below this
  high: float | None = None  # the largest value allowed
  choices: tuple | None = None
  # May change between restarts of a run: nothing a checkpoint or a data cache holds depends on it.
  resumable: bool = False


def resumable(fields: dict[str, Field]) -> dict[str, Field]:
  return {name: dataclasses.replace(field, resumable=True) for name, field in fields.items()}


COUNT, NATURAL = Field(int, low=1), Field(int, low=0)
FRACTION, NON_NEGATIVE = Field(float, low=0, below=1), Field(float, low=0)


def check_field(name: str, field: Field, value) -> None:
  """Raises UserError unless `value` is what FIELDS[name] allows."""
  if field.kind in (int, float):
    is_number = isinstance(value, int if field.kind is int else (int, float))
    if not is_number or isinstance(value, bool):
      raise UserError(
        f'{name}={value!r} must be {"an integer" if field.kind is int else "a number"}'
      )
    if not math.isfinite(value):
      raise UserError(f'{name}={value!r} must be finite')
    if field.low is not None and value < field.low:
      raise UserError(
        f'{name}={value} must be '
        + ('positive' if field.low == 1 and field.kind is int else f'>= {field.low:g}')
      )
    if field.below is not None and value >= field.below:
      raise UserError(f'{name}={value} must be below {field.below:g}')
    if field.high is not None and value > field.high:
      raise UserError(f'{name}={value} must be at most {field.high:g}')
  if field.choices is not None and value not in field.choices:
    raise UserError(f'{name}={value!r}; choose one of {", ".join(field.choices)}')


# Fields that moved, old name -> new: a config.json written before the move still reads (upgrade).
MOVED = {
  'model.type_vocab_size': 'bert.type_vocab_size',
  'train.mlm_probability': 'bert.mlm_probability',
  'model.n_encoder_layers': 'encoder_decoder.n_encoder_layers',
  'train.source_len': 'encoder_decoder.source_len',
  'train.label_smoothing': 'encoder_decoder.label_smoothing',
}


# Fields added since configs were first saved, with the value that does what runs did before them:
# a config.json (or a sweep's results row) without one still means the same run.
ADDED = {'data.train_subset': 'first'}


def upgrade(saved: dict) -> dict:
  """A config (as nested dicts, from a config.json) with the fields of MOVED under their new
  names and those of ADDED it lacks at their old behaviour; a config already in today's form
  comes back equal."""
  upgraded = json.loads(json.dumps(saved))
  for old, new in MOVED.items():
    old_section, old_name = old.split('.')
    if old_name in upgraded.get(old_section, {}):
      new_section, new_name = new.split('.')
      upgraded.setdefault(new_section, {})[new_name] = upgraded[old_section].pop(old_name)
  for field, value in ADDED.items():
    section, name = field.split('.')
    if section in upgraded:
      upgraded[section].setdefault(name, value)
  return upgraded
