"""Help to write an entity graph: infer one from a live database's catalog
(:mod:`~bundler.graphtools.infer`), check one against a database
(:mod:`~bundler.graphtools.check`), and the SQL-type-to-graph-type mapping both, and the
billing graphs' generator, use (:mod:`~bundler.graphtools.types`)."""
