"""The plugin contract's version: what the CLI prints and what plugins declare they need.

Kept apart from the manager (pluggy, the pydantic spec types) so that ``m3fm --help`` and
``m3fm version`` can print it without loading them.
"""

PLUGIN_API_VERSION = "1.7"
"""Version of the plugin contract (hooks and spec types) this release implements.

1.1 added the optional `LanguageSpec.extract_findings` (and the `Finding` type it returns).
1.2 added the optional `LanguageSpec.label_prompts` (and the `LabelPrompts` type).
1.3 added the optional `LanguageSpec.parallel_sentences`, `LanguageSpec.sample_reports` and
`ModalitySpec.sample_files`.
1.4 added the optional `ModalitySpec.dicom_modalities`.
1.5 added the optional `m3fm_labels()` hook (and the `LabelSpec` type it returns).
1.6 added the optional `ModalitySpec.augment`.
1.7 added `m3fm.imaging.read_picture` to the SDK (a picture read without MONAI).
"""
