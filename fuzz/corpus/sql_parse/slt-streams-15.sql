SELECT name FROM (VALUES ('only queries reach the lake')) AS t(name)
