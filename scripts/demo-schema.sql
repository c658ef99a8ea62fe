-- Demo databases and tables, used by scripts/setup.sh (make run) and docker/compose.yaml.
CREATE DATABASE IF NOT EXISTS shop;
CREATE DATABASE IF NOT EXISTS shop_next;
CREATE TABLE IF NOT EXISTS shop.orders (
  id BIGINT PRIMARY KEY AUTO_INCREMENT,
  customer VARCHAR(100) NOT NULL,
  total DECIMAL(12,2) NOT NULL DEFAULT 0,
  created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);
CREATE TABLE IF NOT EXISTS shop.order_items (
  id BIGINT PRIMARY KEY AUTO_INCREMENT,
  order_id BIGINT NOT NULL,
  sku VARCHAR(40) NOT NULL,
  qty INT NOT NULL
);
CREATE TABLE IF NOT EXISTS shop.audit_log (
  id BIGINT PRIMARY KEY AUTO_INCREMENT,
  message TEXT
);
-- The secondary starts with the same (empty) tables, as after
-- `tandem backfill --create-tables`; audit_log is not mirrored (rules/shop.yaml).
CREATE TABLE IF NOT EXISTS shop_next.orders LIKE shop.orders;
CREATE TABLE IF NOT EXISTS shop_next.order_items LIKE shop.order_items;
-- The account the demo's proxy user `app` acts as (`backend_user` in
-- config/tandem.yaml): its GRANTs, not root's, apply to the application.
-- INSERT on Tandem's own database: mirrored transactions write their
-- commit marker there, in the application's own transaction.
CREATE USER IF NOT EXISTS 'shop_app'@'localhost' IDENTIFIED BY 'shop-app-pw';
CREATE USER IF NOT EXISTS 'shop_app'@'127.0.0.1' IDENTIFIED BY 'shop-app-pw';
CREATE USER IF NOT EXISTS 'shop_app'@'%' IDENTIFIED BY 'shop-app-pw';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, CREATE TEMPORARY TABLES,
  LOCK TABLES, CREATE VIEW, SHOW VIEW, TRIGGER, EXECUTE ON shop.* TO 'shop_app'@'localhost', 'shop_app'@'127.0.0.1', 'shop_app'@'%';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, CREATE TEMPORARY TABLES,
  LOCK TABLES, CREATE VIEW, SHOW VIEW, TRIGGER, EXECUTE ON shop_next.* TO 'shop_app'@'localhost', 'shop_app'@'127.0.0.1', 'shop_app'@'%';
GRANT SELECT, INSERT ON tandem.* TO 'shop_app'@'localhost', 'shop_app'@'127.0.0.1', 'shop_app'@'%';
