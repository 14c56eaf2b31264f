//! The products this process's till sales last read, so that the next
//! sale of them is written in one round trip ([`super::checkout`]).

use std::collections::HashMap;

use crate::db::{
    ids::{MerchantId, ProductId},
    tenant::sales::CatalogItem,
};

/// The products this process's till sales last read, per merchant: a till
/// sale whose products are all here is priced from them and written in one
/// round trip, the write checking them against the catalog (see
/// [`record`](super::checkout::record)). Nothing here is trusted: a product
/// changed since (by this process or another) only costs that sale a read.
/// Bounded: past [`KnownProducts::MAX`] entries it starts over.
#[derive(Debug, Default)]
pub struct KnownProducts {
    entries: parking_lot::Mutex<HashMap<(MerchantId, ProductId), CatalogItem>>,
}

impl KnownProducts {
    /// Products kept at most, over all merchants (about 200 bytes each).
    pub const MAX: usize = 100_000;

    /// Each of `products` once, if every one is known.
    pub(super) fn get(
        &self,
        merchant: MerchantId,
        products: impl Iterator<Item = ProductId>,
    ) -> Option<Vec<CatalogItem>> {
        let entries = self.entries.lock();
        let mut items: Vec<CatalogItem> = Vec::new();
        for id in products {
            if !items.iter().any(|p| p.id == id) {
                items.push(entries.get(&(merchant, id))?.clone());
            }
        }
        Some(items)
    }

    pub(super) fn remember(&self, merchant: MerchantId, items: &[CatalogItem]) {
        let mut entries = self.entries.lock();
        if entries.len() + items.len() > Self::MAX {
            entries.clear();
        }
        for p in items {
            entries.insert((merchant, p.id), p.clone());
        }
    }

    pub(super) fn forget(&self, merchant: MerchantId, items: &[CatalogItem]) {
        let mut entries = self.entries.lock();
        for p in items {
            entries.remove(&(merchant, p.id));
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn item(id: ProductId) -> CatalogItem {
        CatalogItem {
            id,
            sku: "SKU".into(),
            name: "Item".into(),
            price_minor: 100,
            tax_rate_bps: 0,
            active: true,
            track_stock: true,
        }
    }

    #[test]
    fn known_products_are_one_merchants_and_all_or_nothing() {
        let known = KnownProducts::default();
        let (a, b) = (MerchantId(Uuid::now_v7()), MerchantId(Uuid::now_v7()));
        let (p, q) = (ProductId(Uuid::now_v7()), ProductId(Uuid::now_v7()));
        known.remember(a, &[item(p)]);
        assert_eq!(known.get(a, [p, p].into_iter()).map(|v| v.len()), Some(1));
        assert!(
            known.get(b, [p].into_iter()).is_none(),
            "another merchant's"
        );
        assert!(
            known.get(a, [p, q].into_iter()).is_none(),
            "one unknown line"
        );
        known.forget(a, &[item(p)]);
        assert!(known.get(a, [p].into_iter()).is_none());
    }

    #[test]
    fn known_products_start_over_past_their_bound() {
        let known = KnownProducts::default();
        let m = MerchantId(Uuid::now_v7());
        let first = ProductId(Uuid::now_v7());
        known.remember(m, &[item(first)]);
        let rest: Vec<CatalogItem> = (1..KnownProducts::MAX)
            .map(|_| item(ProductId(Uuid::now_v7())))
            .collect();
        known.remember(m, &rest);
        assert!(known.get(m, [first].into_iter()).is_some(), "at the bound");
        let last = ProductId(Uuid::now_v7());
        known.remember(m, &[item(last)]);
        assert!(known.get(m, [first].into_iter()).is_none(), "started over");
        assert!(known.get(m, [last].into_iter()).is_some());
        assert_eq!(known.entries.lock().len(), 1);
    }
}
