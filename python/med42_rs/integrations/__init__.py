"""Adapters to other frameworks, each behind its own extra.

- :mod:`med42_rs.integrations.lm_eval` (``pip install 'med42-rs[eval]'``): an
  lm-evaluation-harness model, ``med42-rs``, and offline medical task configurations.
- :mod:`med42_rs.integrations.langchain` (``pip install 'med42-rs[langchain]'``): ``ChatMed42``, a
  LangChain chat model.

Both call the same :class:`~med42_rs.Model` and :class:`~med42_rs.SamplingParams` as the rest of
the package; none of them has templates, stop handling or sampling of its own.
"""
