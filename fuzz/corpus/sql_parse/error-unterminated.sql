SELECT "a
 b", 'unterminated