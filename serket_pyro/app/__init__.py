"""The command-line application: ``serket-pyro`` (:mod:`.cli`), the runs it drives (:mod:`.runner`)
and the report plots (:mod:`.plots`)."""
