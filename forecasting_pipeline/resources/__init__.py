"""One module per external system; assets never open connections themselves."""
