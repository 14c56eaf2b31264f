-- Every posd instance LISTENs on posd_staff and forgets its cached state of
-- the staff user named in the payload, so a deactivation or a role change
-- takes effect at once on every instance, not only on the one that made it.
CREATE FUNCTION posd_notify_staff() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('posd_staff', OLD.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER staff_users_state_changed
    AFTER UPDATE OF role, active ON staff_users
    FOR EACH ROW
    WHEN (ROW(OLD.role, OLD.active) IS DISTINCT FROM ROW(NEW.role, NEW.active))
    EXECUTE FUNCTION posd_notify_staff();

CREATE TRIGGER staff_users_deleted
    AFTER DELETE ON staff_users
    FOR EACH ROW
    EXECUTE FUNCTION posd_notify_staff();
