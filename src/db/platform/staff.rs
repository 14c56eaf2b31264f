//! Staff users: the people who log in to a merchant's tills.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::{Platform, schema::staff_users};
use crate::db::{
    ids::{MerchantId, StaffId},
    kinds::{MerchantStatus, Role},
};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = staff_users, check_for_backend(diesel::pg::Pg))]
pub struct StaffUser {
    pub id: StaffId,
    pub merchant_id: MerchantId,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = staff_users)]
pub struct NewStaffUser<'a> {
    pub id: StaffId,
    pub merchant_id: MerchantId,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub role: Role,
}

impl StaffUser {
    /// The active staff user with this email at the merchant with this
    /// slug, with the merchant's status.
    pub fn find_for_login(
        p: &mut Platform<'_>,
        merchant_slug: &str,
        email: &str,
    ) -> QueryResult<Option<(StaffUser, MerchantStatus)>> {
        use super::schema::merchants;
        staff_users::table
            .inner_join(merchants::table)
            .filter(merchants::slug.eq(merchant_slug))
            .filter(staff_users::email.eq(email.to_lowercase()))
            .filter(staff_users::active.eq(true))
            .select((StaffUser::as_select(), merchants::status))
            .first(p.conn)
            .optional()
    }

    pub fn insert(p: &mut Platform<'_>, new: &NewStaffUser<'_>) -> QueryResult<StaffUser> {
        diesel::insert_into(staff_users::table)
            .values(new)
            .returning(StaffUser::as_returning())
            .get_result(p.conn)
    }

    /// The merchant's staff, oldest first.
    pub fn list(p: &mut Platform<'_>, merchant: MerchantId) -> QueryResult<Vec<StaffUser>> {
        staff_users::table
            .filter(staff_users::merchant_id.eq(merchant))
            .order((staff_users::created_at, staff_users::id))
            .select(StaffUser::as_select())
            .load(p.conn)
    }

    /// A staff user of this merchant; another merchant's is `NotFound`.
    pub fn find(p: &mut Platform<'_>, merchant: MerchantId, id: StaffId) -> QueryResult<StaffUser> {
        staff_users::table
            .filter(staff_users::merchant_id.eq(merchant))
            .filter(staff_users::id.eq(id))
            .select(StaffUser::as_select())
            .first(p.conn)
    }

    /// A staff user of this merchant, its row locked until the end of the
    /// transaction (what it was before a change); another merchant's is
    /// `NotFound`.
    pub fn find_for_update(
        p: &mut Platform<'_>,
        merchant: MerchantId,
        id: StaffId,
    ) -> QueryResult<StaffUser> {
        staff_users::table
            .filter(staff_users::merchant_id.eq(merchant))
            .filter(staff_users::id.eq(id))
            .select(StaffUser::as_select())
            .for_no_key_update()
            .first(p.conn)
    }

    /// Locks the merchant's active owners until the end of the transaction,
    /// so that two owners demoting each other at once cannot both succeed.
    pub fn lock_active_owners(
        p: &mut Platform<'_>,
        merchant: MerchantId,
    ) -> QueryResult<Vec<StaffId>> {
        staff_users::table
            .filter(staff_users::merchant_id.eq(merchant))
            .filter(staff_users::role.eq(Role::Owner))
            .filter(staff_users::active.eq(true))
            .select(staff_users::id)
            .for_update()
            .load(p.conn)
    }

    /// Applies `changes` to a staff user of this merchant.
    pub fn update(
        p: &mut Platform<'_>,
        merchant: MerchantId,
        id: StaffId,
        changes: &StaffChanges,
    ) -> QueryResult<StaffUser> {
        let target = staff_users::table
            .filter(staff_users::merchant_id.eq(merchant))
            .filter(staff_users::id.eq(id));
        if changes.role.is_none() && changes.active.is_none() {
            return Self::find(p, merchant, id);
        }
        diesel::update(target)
            .set(changes)
            .returning(StaffUser::as_returning())
            .get_result(p.conn)
    }

    /// How many active staff users the merchant has.
    pub fn count_active(p: &mut Platform<'_>, merchant: MerchantId) -> QueryResult<i64> {
        staff_users::table
            .filter(staff_users::merchant_id.eq(merchant))
            .filter(staff_users::active.eq(true))
            .count()
            .get_result(p.conn)
    }

    /// Whether a staff user is active and their current role; `None` for
    /// an id that is not a staff user.
    pub fn status(
        p: &mut Platform<'_>,
        id: StaffId,
    ) -> QueryResult<Option<(bool, Role, MerchantId)>> {
        staff_users::table
            .filter(staff_users::id.eq(id))
            .select((
                staff_users::active,
                staff_users::role,
                staff_users::merchant_id,
            ))
            .first(p.conn)
            .optional()
    }
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = staff_users)]
pub struct StaffChanges {
    pub role: Option<Role>,
    pub active: Option<bool>,
}
