"""The local write-ahead log of direct mode: the log, its readers (a trace source and event sources) and the receivers' sink."""
