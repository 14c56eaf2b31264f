DROP TRIGGER staff_users_deleted ON staff_users;
DROP TRIGGER staff_users_state_changed ON staff_users;
DROP FUNCTION posd_notify_staff();
