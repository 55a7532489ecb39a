"""Commands beyond ``run``: one module per concern, registered in :mod:`pipeline.cli`.

``common`` holds what every command shares (errors to exit codes, help epilogs, ``--map``);
``failures`` exports problem records; ``retire`` closes them; ``replay`` plans what ``replay``
sends; ``history`` is ``status``; ``preflight`` is ``validate`` and ``check``;
``settings_view`` is ``config show``.
"""
