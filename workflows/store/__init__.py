"""The stage store: every stage's folder addressed by its content, shared by every run_dir.

    <store>/                        store_dir (default outputs/store, or $POSTTRAIN_STORE_DIR)
      <stage type>/<fingerprint>/   one stage folder (posttrain/artifacts.py layout): stage.yaml,
                                    stage.log, fingerprint.json, checkpoints/, model/ ..., manifest.json
      .locks/<type>-<fingerprint>.lock   its fcntl lock (workflows/state/lock.py); its mtime: last use
      .run_dirs/<digest>.json       the run_dirs that link into the store (for `posttrain store ls/gc`)

    <run_dir>/<stage> -> <store>/<type>/<fingerprint>    the view: a symlink per stage

A stage's fingerprint (workflows/state/fingerprint.py) leaves out its own paths, so the same stage
in another pipeline or run_dir has the same entry and is trained once. An entry is done when its
manifest, written last and atomically by the stage, carries its fingerprint: that rename is the
publish; a crash before it leaves an entry that is resumed (same fingerprint, its checkpoints) or
cleared, never one that counts as done. layout.py: paths and what an entry holds; views.py: a
plan's stages moved into the store and the run_dir's links; claim.py: one writer per entry;
commands.py: `posttrain store ls|gc`.
"""
