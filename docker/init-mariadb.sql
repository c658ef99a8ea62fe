-- Root connects from the Tandem container (the demo schema is in
-- scripts/demo-schema.sql, mounted beside this file).
CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
