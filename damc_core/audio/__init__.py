"""Audio features: the content encoder's input and output, the dynamic encoder's mel windows, pinyin units."""
