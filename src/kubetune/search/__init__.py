"""Adaptive sweeps: Optuna's samplers and pruners over kubetune's runs, with the search's
state kept in the run store beside the runs it launched (:mod:`kubetune.search.journal`)."""
