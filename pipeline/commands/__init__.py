"""Commands beyond ``run``: one module per concern, registered in :mod:`pipeline.cli`.

``common`` holds what every command shares (errors to exit codes); ``failures`` lists and
retires problem records; ``history`` is ``status``; ``preflight`` is ``validate`` and ``check``;
``settings_view`` is ``config show``.
"""
