"""The files of an image folder, by class and split, and the name of what they are (no
TensorFlow: any process computes the same split; see `ran_jax.data.image_folder`).

Links are followed, to files and to folders, except a link back to a folder above it (a loop):
it is skipped and named in `Listing.loops`."""

import dataclasses
import hashlib
import json
import os

import numpy as np

EVAL_FOLDERS = ('val', 'validation', 'test')


class FolderError(ValueError):
  """The image folder can't be used as it is; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class FolderOptions:
  """How a folder is split and which input recipe its images take (the config's folder
  fields; `recipe` 'auto': from the images)."""
  folder: str
  val_fraction: float = 0.1
  split_seed: int = 0
  recipe: str = 'auto'
  flip: bool = True


@dataclasses.dataclass(frozen=True)
class Listing:
  """The files of a folder, by class: `train` and `eval` map each class to its files (paths
  relative to the folder, sorted); `eval` is None when the folder is not split."""
  root: str
  classes: tuple[str, ...]
  train: dict[str, list[str]]
  eval: dict[str, list[str]] | None
  eval_folder: str | None
  entries: tuple[tuple[str, int, int], ...]  # (path, bytes, mtime_ns) of every file
  loops: tuple[str, ...] = ()  # folders (paths relative to the folder) skipped as link loops


def _visible(names: list[str]) -> list[str]:
  return sorted(name for name in names if not name.startswith('.'))


def _key(path: str) -> tuple[int, int]:
  info = os.stat(path)
  return info.st_dev, info.st_ino


def _above(path: str) -> frozenset[tuple[int, int]]:
  """(device, inode) of the folder `path` and of every folder above it, as named and as
  resolved."""
  keys = set()
  for folder in (os.path.abspath(path), os.path.realpath(path)):
    while True:
      keys.add(_key(folder))
      parent = os.path.dirname(folder)
      if parent == folder:
        break
      folder = parent
  return frozenset(keys)


def _is_loop(path: str, key: tuple[int, int], chain: frozenset[tuple[int, int]]) -> bool:
  """Whether the folder `path` leads back to a folder above it: one on the path walked (`chain`)
  or, for a link, one above where the link really is."""
  return key in chain or (os.path.islink(path) and
                          key in _above(os.path.realpath(os.path.dirname(path))))


def _files_under(root: str, top: str, chain: frozenset[tuple[int, int]], loops: list[str]
                 ) -> list[tuple[str, int, int]]:
  """(path, bytes, mtime_ns) of the files at any depth below `top` (`chain`: the folders above
  it, and itself), following links except loops, which are added to `loops`."""
  found, chains = [], {top: chain}
  for directory, subdirs, names in os.walk(top, followlinks=True):
    chain = chains.pop(directory)
    kept = []
    for name in _visible(subdirs):
      path = os.path.join(directory, name)
      key = _key(path)
      if _is_loop(path, key, chain):
        loops.append(os.path.relpath(path, root))
      else:
        kept.append(name)
        chains[path] = chain | {key}
    subdirs[:] = kept
    for name in _visible(names):
      path = os.path.join(directory, name)
      info = os.stat(path)
      found.append((os.path.relpath(path, root), info.st_size, info.st_mtime_ns))
  return sorted(found)


def _class_files(root: str, split: str, loops: list[str]) -> tuple[dict[str, list[str]], list]:
  top = os.path.join(root, split)
  above = _above(top)
  files, entries = {}, []
  for name in _visible(os.listdir(top)):
    path = os.path.join(top, name)
    if not os.path.isdir(path):
      continue
    key = _key(path)
    if _is_loop(path, key, above):
      loops.append(os.path.relpath(path, root))
      continue
    found = _files_under(root, path, above | {key}, loops)
    files[name] = [relative for relative, _, _ in found]
    entries += found
  return files, entries


def list_folder(folder: str) -> Listing:
  """The classes and files of `folder`; a FolderError when it is missing or can't be used."""
  root = os.path.abspath(os.path.expanduser(folder))
  if not os.path.isdir(root):
    what = 'is not a directory' if os.path.exists(root) else 'does not exist'
    raise FolderError(f'folder={folder!r} {what}; give a directory with one subfolder of '
                      'images per class (DIR/<class>/*.jpg)')
  subdirs = [name for name in _visible(os.listdir(root)) if os.path.isdir(os.path.join(root, name))]
  split_names = [name for name in EVAL_FOLDERS if name in subdirs]
  loops = []
  if 'train' in subdirs and split_names:
    train, train_entries = _class_files(root, 'train', loops)
    eval_folder = split_names[0]
    evaluation, eval_entries = _class_files(root, eval_folder, loops)
    if set(train) != set(evaluation):
      only_train = sorted(set(train) - set(evaluation)) or 'none'
      only_eval = sorted(set(evaluation) - set(train)) or 'none'
      raise FolderError(
          f'{root}/train and {root}/{eval_folder} have different class folders (only in train: '
          f'{only_train}; only in {eval_folder}: {only_eval}); give both the same classes')
    listing = Listing(root, tuple(sorted(train)), train, evaluation, eval_folder,
                      tuple(train_entries + eval_entries), tuple(loops))
  else:
    train, entries = _class_files(root, '', loops)
    listing = Listing(root, tuple(sorted(train)), train, None, None, tuple(entries), tuple(loops))
  if not listing.classes:
    raise FolderError(f'{root} has no class folders; put the images of each class in a '
                      'subfolder named after it (DIR/<class>/*.jpg)')
  if len(listing.classes) < 2:
    raise FolderError(f'{root} has one class folder only ({listing.classes[0]!r}); a classifier '
                      'needs at least two')
  for name, files in listing.train.items():
    if not files:
      raise FolderError(f'the class folder {name!r} in {root} holds no files; add images or '
                        'remove it')
  return listing


def split_for_validation(files: list[str], class_index: int, val_fraction: float,
                         seed: int) -> tuple[list[str], list[str]]:
  """(train, validation) files of one class (n >= 2): a seeded permutation of the sorted files,
  of which the first max(1, round(val_fraction * n)) are held out, leaving at least one."""
  files = sorted(files)
  count = min(max(1, round(val_fraction * len(files))), len(files) - 1)
  order = np.random.default_rng([seed, class_index]).permutation(len(files))
  held = {files[i] for i in order[:count]}
  return [f for f in files if f not in held], [f for f in files if f in held]


def fingerprint(listing: Listing, options: FolderOptions) -> str:
  """A name for the folder's contents (every file's path, size and modification time) and
  how it is split."""
  split = ('presplit', listing.eval_folder) if listing.eval is not None else (
      'held-out', options.val_fraction, options.split_seed)
  text = json.dumps([listing.root, split, listing.entries])
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def split(listing: Listing, options: FolderOptions, unreadable: set[str] = frozenset()
          ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
  """(train, validation) files of each class, leaving out `unreadable` ones: the folder's own
  split, or a validation fraction held out of each class (`split_for_validation`)."""
  def readable(files: dict[str, list[str]], where: str) -> dict[str, list[str]]:
    kept = {name: [f for f in files[name] if f not in unreadable] for name in listing.classes}
    for name, paths in kept.items():
      if not paths:
        raise FolderError(f'the class folder {name!r} in {where} has no image Pillow can read '
                          f'({len(files[name])} files, none readable); add images or remove it')
    return kept

  train = readable(listing.train, listing.root)
  if listing.eval is not None:
    return train, readable(listing.eval, os.path.join(listing.root, listing.eval_folder))
  evaluation = {}
  for index, name in enumerate(listing.classes):
    if len(train[name]) < 2:
      raise FolderError(
          f'the class folder {name!r} has {len(train[name])} readable image; holding out a '
          'validation image per class needs at least 2 (add images, or split the folder '
          'yourself into train/ and val/)')
    train[name], evaluation[name] = split_for_validation(
        train[name], index, options.val_fraction, options.split_seed)
  return train, evaluation
