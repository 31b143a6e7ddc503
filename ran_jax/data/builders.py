"""Finding and preparing the TFDS datasets, with errors that say what to do."""

import contextlib
import io
import logging
import os
import socket
import urllib.parse
from collections.abc import Callable

from etils import epath

from ran_jax.data.datasets import DatasetSpec, DatasetUnavailableError
from ran_jax.data.quiet_tf import tfds

PROBE_SECONDS = 10  # to connect to a download host before TFDS is left to try


def make_builder(spec: DatasetSpec, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """The TFDS builder of `spec` in `data_dir` (TFDS's default directory when None)."""
  if spec.tfds_name == 'digits':
    from ran_jax.data import digits  # registers the builder; scikit-learn ships the data
    return digits.Digits(data_dir=data_dir)
  return tfds.builder(spec.tfds_name, data_dir=data_dir)


def manual_dir_of(builder: tfds.core.DatasetBuilder, manual_dir: str | None = None) -> epath.Path:
  """Where TFDS looks for manually downloaded files: `<data_dir>/downloads/manual` by default."""
  return epath.Path(manual_dir) if manual_dir else builder.data_dir_root / 'downloads' / 'manual'


def _prepare_command(spec: DatasetSpec, builder: tfds.core.DatasetBuilder,
                     manual_dir: str | None) -> str:
  command = (f'python3 -m ran_jax.data.prepare --dataset={spec.tfds_name} '
             f'--data_dir={builder.data_dir_root}')
  return command + (f' --manual_dir={manual_dir}' if manual_dir else '')


def check_manual_files(spec: DatasetSpec, builder: tfds.core.DatasetBuilder,
                       manual_dir: str | None = None) -> None:
  """Raises DatasetUnavailableError naming each of `spec.manual_files` that is missing."""
  directory = manual_dir_of(builder, manual_dir)
  missing = [name for name in spec.manual_files if not (directory / name).exists()]
  if not missing:
    return
  paths = ', '.join(str(directory / name) for name in missing)
  raise DatasetUnavailableError(
      f'{spec.tfds_name} is not prepared in {builder.data_dir_root} and cannot be prepared: '
      f'{" and ".join(missing)} {"is" if len(missing) == 1 else "are"} missing from '
      f'{directory} (looked for {paths}). Download {" and ".join(spec.manual_files)} from '
      f'{spec.manual_source} into that directory, then run '
      f'`{_prepare_command(spec, builder, manual_dir)}` (see README, "ImageNet"), or set '
      'data_dir to a directory where the dataset is prepared.')


def _unreachable_source(builder: tfds.core.DatasetBuilder) -> str | None:
  """Why the files TFDS would download for `builder` can't be reached from here, or None.

  One quick connection per host, so that a machine without network is told at once instead of
  after minutes of TFDS's retries. Files already in `<data_dir>/downloads` need no network;
  behind a proxy, TFDS is left to try.
  """
  proxies = ('https_proxy', 'http_proxy', 'all_proxy')
  if any(os.environ.get(name) or os.environ.get(name.upper()) for name in proxies):
    return None
  downloads = builder.data_dir_root / 'downloads'
  for url, info in (builder.url_infos or {}).items():
    if (downloads / tfds.download.resource.get_dl_fname(url, info.checksum)).exists():
      continue
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == 'https' else 80)
    try:
      socket.create_connection((parts.hostname, port), timeout=PROBE_SECONDS).close()
    except OSError as error:
      return f'{parts.hostname} cannot be reached ({error.strerror or error})'
  return None


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  """Whether the dataset is prepared (without TFDS's warning when its folder does not exist)."""
  return builder.data_path.exists() and builder.is_prepared()


def describe(builder: tfds.core.DatasetBuilder) -> str:
  """One line: where the prepared dataset is and the examples and files of each split."""
  splits = ', '.join(f'{name} {split.num_examples:,} examples ({split.num_shards} files)'
                     for name, split in sorted(builder.info.splits.items()))
  return f'{builder.info.full_name} in {builder.data_dir}: {splits}'


def download_and_prepare(builder: tfds.core.DatasetBuilder,
                         config: tfds.download.DownloadConfig | None = None,
                         progress_bars: bool = False) -> None:
  """`builder.download_and_prepare`, without the lines TFDS prints on stdout (its size notice
  and 'downloaded and prepared'): callers report in their own words."""
  tfds.display_progress_bar(progress_bars)
  with contextlib.redirect_stdout(io.StringIO()):
    builder.download_and_prepare(download_config=config)


def prepare(spec: DatasetSpec, data_dir: str | None, manual_dir: str | None = None,
            num_shards: int | None = None,
            report: Callable[[str], None] = lambda line: None,
            progress_bars: bool = True) -> tfds.core.DatasetBuilder:
  """The builder of `spec`, with the dataset prepared in `data_dir` if it was not already.

  Args:
    spec: the dataset.
    data_dir: the TFDS data directory (TFDS's default when None).
    manual_dir: where manually downloaded files are (`<data_dir>/downloads/manual` when None).
    num_shards: files per split to write (TFDS chooses by size when None).
    report: called with each line of progress.
    progress_bars: whether TFDS draws its progress bars (not in a training log).
  """
  builder = make_builder(spec, data_dir)
  if is_prepared(builder):
    report(f'Already prepared: {describe(builder)}')
    return builder
  check_manual_files(spec, builder, manual_dir)
  source = (f'from {", ".join(spec.manual_files)} in {manual_dir_of(builder, manual_dir)}'
            if spec.manual_files else 'from its source')
  if not spec.manual_files and not spec.embedded:
    unreachable = _unreachable_source(builder)
    if unreachable:
      raise DatasetUnavailableError(
          f'{spec.tfds_name} is not prepared in {builder.data_dir_root} and cannot be '
          f'downloaded here: {unreachable}. On a machine with internet access run '
          f'`python3 -m ran_jax.data.prepare --dataset={spec.tfds_name} --data_dir=DIR`, then '
          f'copy DIR/{builder.name} to {builder.data_dir_root}/{builder.name} (or set '
          'data_dir to a directory where it is prepared).')
  report(f'Preparing {spec.tfds_name} in {builder.data_dir_root} {source} ...')
  config = tfds.download.DownloadConfig(manual_dir=manual_dir, num_shards=num_shards)
  try:
    download_and_prepare(builder, config, progress_bars)
  except Exception as error:  # TFDS raises many kinds; the cause is in the message
    raise DatasetUnavailableError(
        f'{spec.tfds_name} is not prepared in {builder.data_dir_root}, and preparing it failed: '
        f'{type(error).__name__}: {error}') from error
  report(f'Prepared {describe(builder)}')
  return builder


def load_builder(spec: DatasetSpec, data_dir: str | None,
                 prepare_if_needed: bool = True) -> tfds.core.DatasetBuilder:
  """The builder of the prepared dataset; prepares it first if needed and allowed."""
  if prepare_if_needed:
    return prepare(spec, data_dir, report=logging.info, progress_bars=False)
  builder = make_builder(spec, data_dir)
  if not is_prepared(builder):
    raise DatasetUnavailableError(
        f'{spec.tfds_name} is not prepared in {builder.data_dir_root}; run '
        f'`{_prepare_command(spec, builder, None)}` first (on every host whose data_dir is '
        'its own).')
  return builder
